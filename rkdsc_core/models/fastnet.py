"""FastNet: a CIFAR convnet built to train in few epochs on a CPU (the default teacher).

Three ideas from the published fast CIFAR-10 recipes (Page 2018, "How to train your
ResNet"; Jordan 2024, "94% on CIFAR-10 in 3.29 seconds") make it train fast:

* a frozen first layer that whitens 2x2 image patches (weights from the eigenvectors of
  the training patches' second-moment matrix, :meth:`FastNetCifar.init_whitening`), so
  the network starts from decorrelated inputs;
* three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU) whose convolutions start
  as identity maps on their first input channels (Dirac initialisation);
* BatchNorm with fixed scale 1 (only the shift is learnt) and a down-scaled logit head.

The training recipe that goes with it (large batch, Nesterov SGD, label smoothing 0.2, a
fast learning rate on the norm shifts) is the ``fastnet-cifar`` preset of
:mod:`rkdsc_core.train.teacher`. The published recipes reach 94% on the original
CIFAR-10 in 10 epochs with more tricks than this preset; the recipe has them as options
(lookahead, reflect-padded crops, decayed norm shifts, a stem bias frozen after a few
epochs, shifted test-time views), off by default; docs/training.md describes them.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.models.base import CIFAR10_MEAN, CIFAR10_STD, Backbone, ImageNormalize
from rkdsc_core.registry import register_model

__all__ = ["FastNetCifar", "FastNetConfig", "fastnet_cifar"]

_PATCH = 2  # whitening patch size [pixels]
_WHITEN_DIMS = 3 * _PATCH * _PATCH  # eigen-directions of a 2x2 RGB patch


@dataclass(frozen=True)
class FastNetConfig:
    """Structure of :class:`FastNetCifar`.

    Args:
        widths: output channels of the three conv groups; the last is ``feature_dim``.
        num_classes: size of the classification head.
        image_size: input resolution [pixels]; other sizes are resized (bilinear) to it.
        logit_scale: the head's output is multiplied by this (a cooler start for the
            softmax without a bias term).
        bn_momentum: PyTorch BatchNorm momentum (weight of the new batch statistic).
    """

    widths: tuple[int, ...] = (64, 320, 320)
    num_classes: int = 10
    image_size: int = 32
    logit_scale: float = 1.0 / 9.0
    bn_momentum: float = 0.4

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive integers, got {self.widths}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if self.logit_scale <= 0 or not 0 < self.bn_momentum <= 1:
            raise ValueError(
                f"need logit_scale > 0 and 0 < bn_momentum <= 1, got {self.logit_scale}, "
                f"{self.bn_momentum}"
            )

    @property
    def grid(self) -> int:
        """Side of the last feature map: the 2x2 whitening conv, then three 2x max-pools."""
        side = self.image_size - _PATCH + 1
        for _ in range(3):
            side //= 2
        return side


def _norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, momentum=momentum, eps=1e-12)
    bn.weight.requires_grad_(False)  # scale fixed at 1: only the shift is learnt
    return bn


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    with torch.no_grad():  # the first min(in, out) filters start as the identity
        nn.init.dirac_(conv.weight[: min(in_ch, out_ch)])
    return conv


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU.

    Inputs:
        x: ``[batch, in_ch, H, W]`` float32.
    Outputs:
        ``[batch, out_ch, H // 2, W // 2]`` float32.
    """

    def __init__(self, in_ch: int, out_ch: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = _conv(in_ch, out_ch)
        self.norm1 = _norm(out_ch, bn_momentum)
        self.conv2 = _conv(out_ch, out_ch)
        self.norm2 = _norm(out_ch, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNetCifar(Backbone):
    """Whitening stem + three conv groups; tokens are the positions of the last map.

    ``T = grid ** 2`` tokens (9 at 32x32: a 3x3 map), ``D = feature_dim = widths[-1]``;
    :meth:`pool` is their maximum (global max-pool), which the head reads.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1] (resized to ``image_size`` if needed).
    Outputs:
        logits ``[batch, num_classes]`` float32.
    """

    def __init__(self, config: FastNetConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else FastNetConfig()
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.feature_dim = cfg.widths[-1]
        self.input_size = cfg.image_size
        self.num_tokens = cfg.grid**2
        self.normalize = ImageNormalize(CIFAR10_MEAN, CIFAR10_STD, size=cfg.image_size)
        self.whiten = nn.Conv2d(3, 2 * _WHITEN_DIMS, _PATCH, padding=0, bias=False)
        self.whiten.weight.requires_grad_(False)  # set from data by init_whitening
        self.whiten.bias = nn.Parameter(torch.zeros(2 * _WHITEN_DIMS))
        chans = (2 * _WHITEN_DIMS, *cfg.widths)
        self.groups = nn.Sequential(
            *(ConvGroup(a, b, cfg.bn_momentum) for a, b in itertools.pairwise(chans))
        )
        self.head = nn.Linear(self.feature_dim, cfg.num_classes, bias=False)

    @property
    def stem_bias(self) -> nn.Parameter:
        """The whitening stem's learnt bias ``[24]`` (its weights are set from data); the
        teacher recipe can train it like a weight for a few epochs, then freeze it."""
        bias = self.whiten.bias
        assert isinstance(bias, nn.Parameter)
        return bias

    @torch.no_grad()
    def init_whitening(self, images: Tensor, *, eps: float = 5e-4) -> None:
        """Set the stem to whiten 2x2 patches of ``images`` (call once, before training).

        The stem's 24 filters are the 12 eigenvectors of the patches' second-moment
        matrix, each divided by ``sqrt(eigenvalue + eps)``, and their negatives (so the
        GELU after it keeps both signs).

        Args:
            images: ``[N, 3, H, W]`` float32 in [0, 1], a sample of the training split
                (a few thousand images is plenty).
        """
        x = self.normalize(images.float().to(self.whiten.weight.device))
        patches = F.unfold(x, _PATCH).transpose(1, 2).reshape(-1, _WHITEN_DIMS).double()
        moment = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(moment)  # ascending
        filters = (vectors.T / torch.sqrt(values + eps)[:, None]).flip(0)  # largest first
        filters = filters.reshape(_WHITEN_DIMS, 3, _PATCH, _PATCH).to(self.whiten.weight.dtype)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> tokens ``[batch, T, widths[-1]]`` float32."""
        x: Tensor = self.groups(F.gelu(self.whiten(self.normalize(images))))
        return x.flatten(2).transpose(1, 2)

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens ``[batch, T, D]`` -> their maximum over positions ``[batch, D]``."""
        return tokens.amax(dim=1)

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled ``[batch, D]`` -> logits ``[batch, num_classes]`` (times ``logit_scale``)."""
        return self.head(pooled) * self.config.logit_scale  # type: ignore[no-any-return]


@register_model("fastnet-cifar")
def fastnet_cifar(**overrides: Any) -> FastNetCifar:
    """FastNet, widths 64/320/320 (3.0M parameters); ``overrides`` are config fields."""
    return FastNetCifar(dataclasses.replace(FastNetConfig(), **overrides))
