"""Additive white Gaussian noise: ``y = x + n``, ``n ~ CN(0, N0)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rkdsc_core._validate import check_complex
from rkdsc_core.channel.mapping import snr_db_to_n0
from rkdsc_core.channel.rng import GeneratorLike, draw

__all__ = ["AWGN", "complex_noise"]


def complex_noise(
    shape: tuple[int, int],
    n0: Tensor | float,
    generator: GeneratorLike = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Circularly-symmetric Gaussian noise CN(0, N0): N0/2 per real part.

    Args:
        shape: ``(batch, n)``.
        n0: noise power per complex symbol: a float, or a float32 scalar or ``[batch]``
            tensor.
        generator: see :data:`rkdsc_core.channel.rng.GeneratorLike`.
        device: where the noise lies (default: ``n0``'s device; the CPU for a float).
    Outputs:
        ``[batch, n]`` complex64.
    """
    if device is None:
        device = n0.device if isinstance(n0, Tensor) else "cpu"
    re_im = draw(torch.randn, (*shape, 2), generator, device=device)
    if isinstance(n0, Tensor) and n0.ndim:
        scale: Tensor | float = torch.sqrt(n0 / 2.0).reshape(-1, 1, 1)
    else:
        scale = math.sqrt(float(n0) / 2.0)
    return torch.view_as_complex((re_im * scale).contiguous())


class AWGN(nn.Module):
    """Adds CN(0, N0) noise with N0 = 10^(-snr_db/10) (for Es = 1 inputs)."""

    def forward(
        self, x: Tensor, snr_db: Tensor | float, *, generator: GeneratorLike = None
    ) -> Tensor:
        """Inputs:
            x: ``[batch, n]`` complex64 with Es = 1.
            snr_db: Es/N0 [dB], scalar or ``[batch]``, in [-30, 60].
        Outputs:
            ``[batch, n]`` complex64, ``x + noise``.
        """
        check_complex("x", x, ndim=2)
        n0 = snr_db_to_n0(snr_db, x.shape[0]).to(x.device)
        return x + complex_noise((x.shape[0], x.shape[1]), n0, generator)
