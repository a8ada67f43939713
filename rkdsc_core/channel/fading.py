"""Flat fading gains: Rayleigh (block or fast) and Rician with a K factor, E|h|^2 = 1."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from rkdsc_core.channel.rng import GeneratorLike, draw

__all__ = ["FadingKind", "rayleigh_gains", "rician_gains"]

FadingKind = Literal["block", "fast"]
"""``block``: one gain per frame (row); ``fast``: an independent gain per symbol."""


def rayleigh_gains(
    batch: int,
    n: int,
    fading: FadingKind,
    generator: GeneratorLike = None,
    *,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Rayleigh gains ``h ~ CN(0, 1)``.

    Outputs:
        ``[batch, n]`` complex64 (for ``block`` every row is constant).
    """
    return rician_gains(batch, n, fading, 0.0, generator, device=device)


def rician_gains(
    batch: int,
    n: int,
    fading: FadingKind,
    k_factor: float,
    generator: GeneratorLike = None,
    *,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Rician gains: a line-of-sight part of power K/(K+1) plus CN(0, 1/(K+1)) scatter.

    Args:
        k_factor: K >= 0 (linear, not dB); 0 is Rayleigh. The LOS phase is 0.
    Outputs:
        ``[batch, n]`` complex64 with E|h|^2 = 1.
    """
    if fading not in ("block", "fast"):
        raise ValueError(f"fading must be 'block' or 'fast', got {fading!r}")
    if not math.isfinite(k_factor) or k_factor < 0:
        raise ValueError(f"k_factor must be a finite K >= 0 (linear), got {k_factor!r}")
    cols = n if fading == "fast" else 1
    re_im = draw(torch.randn, (batch, cols, 2), generator, device=device)
    scatter = torch.view_as_complex(re_im.contiguous()) * math.sqrt(0.5 / (k_factor + 1.0))
    h = scatter + math.sqrt(k_factor / (k_factor + 1.0))
    return h.expand(batch, n) if fading == "block" else h
