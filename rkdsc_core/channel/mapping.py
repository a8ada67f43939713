"""The symbol conventions of rkdsc: real features <-> complex symbols, power and SNR.

Conventions (used by training and by the channel emulator alike):

* Complex baseband. Real features map to complex symbols in consecutive pairs:
  ``z[k] = x[2k] + j x[2k+1]``.
* Power is normalised to unit average energy per complex symbol, ``E|z|^2 = Es = 1``,
  over the symbols actually sent, per image (per row).
* SNR is Es/N0 per complex symbol in dB; the noise is CN(0, N0) with
  ``N0 = 10^(-SNR/10)``: N0 per complex dimension, N0/2 per real part.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rkdsc_core._validate import check_snr_db

__all__ = ["complex_to_real", "normalize_power", "real_to_complex", "snr_db_to_n0"]


def real_to_complex(x: Tensor) -> Tensor:
    """Pair real features into complex symbols.

    Inputs:
        x: ``[..., 2n]`` float32 (any float dtype; computed in float32).
    Outputs:
        ``[..., n]`` complex64, ``z[..., k] = x[..., 2k] + j x[..., 2k+1]``.
    """
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"x must be a real float tensor, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(
            f"x's last dimension must be even (features pair into symbols), got {tuple(x.shape)}"
        )
    pairs = x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    return torch.view_as_complex(pairs.contiguous())


def complex_to_real(z: Tensor) -> Tensor:
    """Inverse of :func:`real_to_complex`: ``[..., n]`` complex -> ``[..., 2n]`` float32."""
    if not z.is_complex():
        raise TypeError(f"z must be complex, got {z.dtype}")
    return torch.view_as_real(z.to(torch.complex64)).flatten(-2)


def normalize_power(z: Tensor, mask: Tensor | None = None, *, eps: float = 1e-12) -> Tensor:
    """Scale each row to unit average energy per complex symbol over the sent symbols.

    Args:
        z: ``[batch, n]`` complex64 symbols.
        mask: ``[batch, n]`` bool, True where a symbol is sent (e.g. the first L of a
            prefix code). ``None`` means all are sent. Unsent symbols come out as 0.
    Outputs:
        ``[batch, n]`` complex64 with ``sum(|z|^2 * mask) / sum(mask) == 1`` per row.
    """
    if z.ndim != 2 or not z.is_complex():
        raise ValueError(f"z must be [batch, n] complex, got {tuple(z.shape)} {z.dtype}")
    energy = z.real.square() + z.imag.square()
    if mask is None:
        mean_energy = energy.mean(dim=1, keepdim=True)
        return z / torch.sqrt(mean_energy + eps)
    if mask.shape != z.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {tuple(z.shape)}, got {tuple(mask.shape)}")
    m = mask.to(energy.dtype)
    count = m.sum(dim=1, keepdim=True)
    if bool((count == 0).any()):
        raise ValueError("every row of mask must send at least one symbol")
    mean_energy = (energy * m).sum(dim=1, keepdim=True) / count
    return z * m / torch.sqrt(mean_energy + eps)


def snr_db_to_n0(snr_db: Tensor | float, batch: int | None = None) -> Tensor:
    """Noise power per complex symbol for Es = 1: ``N0 = 10^(-snr_db/10)``.

    Args:
        snr_db: Es/N0 [dB] in [-30, 60], scalar or ``[batch]``.
    Outputs:
        float32 tensor, shape of ``snr_db``.
    """
    return torch.pow(10.0, -check_snr_db(snr_db, batch) / 10.0)
