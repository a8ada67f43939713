"""The DARTS search space as data: primitive names and the op table ``name -> factory``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OPS",
    "PRIMITIVES",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "OpFactory",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "drop_path",
]

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The 8 candidate operations of a DARTS cell edge, in the order of the architecture logits."""

OpFactory = Callable[[int, int, bool], nn.Module]
"""``factory(C, stride, affine) -> module`` mapping ``[B, C, H, W]`` to
``[B, C, ceil(H/stride), ceil(W/stride)]``."""


def _check_stride(stride: int) -> None:
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")


class ReLUConvBN(nn.Module):
    """ReLU -> Conv2d(kernel, stride, padding) -> BatchNorm.

    Inputs:
        x: ``[batch, C_in, H, W]`` float32.
    Outputs:
        ``[batch, C_out, H', W']`` float32 (``H' = (H + 2 padding - kernel) // stride + 1``).
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)  # type: ignore[no-any-return]


class DilConv(nn.Module):
    """ReLU -> depthwise (dilated) conv -> pointwise 1x1 conv -> BatchNorm.

    Inputs:
        x: ``[batch, C_in, H, W]`` float32.
    Outputs:
        ``[batch, C_out, ceil(H/stride), ceil(W/stride)]`` float32 when
        ``padding = dilation * (kernel_size - 1) // 2`` (the DARTS settings).
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in,
                C_in,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=C_in,
                bias=False,
            ),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)  # type: ignore[no-any-return]


class SepConv(nn.Module):
    """Two stacked depthwise-separable blocks (dilation 1); only the first one strides.

    Inputs:
        x: ``[batch, C_in, H, W]`` float32.
    Outputs:
        ``[batch, C_out, ceil(H/stride), ceil(W/stride)]`` float32 when
        ``padding = (kernel_size - 1) // 2``.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, dilation=1, affine=affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, dilation=1, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)  # type: ignore[no-any-return]


class Identity(nn.Module):
    """``x -> x`` (its own class so drop-path can recognise and spare it)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of shape ``[batch, C, ceil(H/stride), ceil(W/stride)]``.

    Multiplies a strided view by 0 (rather than allocating) so the output keeps the input's
    dtype, device and autograd graph.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        _check_stride(stride)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two offset stride-2 1x1 convs.

    The second path sees the input shifted by one pixel (zero-padded at the far edge), so
    odd sizes work too.

    Inputs:
        x: ``[batch, C_in, H, W]`` float32.
    Outputs:
        ``[batch, C_out, ceil(H/2), ceil(W/2)]`` float32. ``C_out`` must be even.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        out = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)
        return self.bn(out)  # type: ignore[no-any-return]


def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


def _avg_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    _check_stride(stride)
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


def _max_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    _check_stride(stride)
    return nn.MaxPool2d(3, stride=stride, padding=1)


def _skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    _check_stride(stride)
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


def _sep_conv(kernel_size: int) -> OpFactory:
    def make(C: int, stride: int, affine: bool) -> nn.Module:
        _check_stride(stride)
        return SepConv(C, C, kernel_size, stride, (kernel_size - 1) // 2, affine=affine)

    return make


def _dil_conv(kernel_size: int) -> OpFactory:
    def make(C: int, stride: int, affine: bool) -> nn.Module:
        _check_stride(stride)
        return DilConv(C, C, kernel_size, stride, kernel_size - 1, dilation=2, affine=affine)

    return make


OPS: Mapping[str, OpFactory] = MappingProxyType(
    {
        "none": _none,
        "avg_pool_3x3": _avg_pool_3x3,
        "max_pool_3x3": _max_pool_3x3,
        "skip_connect": _skip_connect,
        "sep_conv_3x3": _sep_conv(3),
        "sep_conv_5x5": _sep_conv(5),
        "dil_conv_3x3": _dil_conv(3),
        "dil_conv_5x5": _dil_conv(5),
    }
)
"""The op table, the single source of the search space: ``OPS[name](C, stride, affine)``.

Every op maps ``[batch, C, H, W]`` float32 to ``[batch, C, ceil(H/stride), ceil(W/stride)]``
(``stride`` 1 or 2). ``affine=False`` (BatchNorm without learned scale/shift) is the DARTS
setting for the supernet during search; derived networks use ``affine=True``. The pools
carry no BatchNorm here; a supernet that wants DARTS' ``BN(affine=False)`` after the pools
adds it itself.
"""

assert set(OPS) == set(PRIMITIVES), "OPS and PRIMITIVES must list the same names"


def drop_path(x: Tensor, drop_prob: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Drop whole samples of a branch with probability ``drop_prob``, rescaling the rest.

    Args:
        x: ``[batch, ...]`` float tensor (a cell edge's output).
        drop_prob: probability in [0, 1) that a sample's branch is zeroed.
        generator: RNG for the Bernoulli draws (``None``: torch's default generator).
    Outputs:
        ``[batch, ...]``, ``x * mask / (1 - drop_prob)`` with one Bernoulli(1 - drop_prob)
        draw per sample. Returns ``x`` itself when ``drop_prob == 0``.
    """
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1), got {drop_prob!r}")
    if drop_prob == 0.0:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=generator)
    return x * mask / keep
