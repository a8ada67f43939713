"""Input checks shared by the library: clear errors that name the argument and the fix."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "SNR_DB_MAX",
    "SNR_DB_MIN",
    "check_complex",
    "check_finite",
    "check_in_range",
    "check_snr_db",
]

SNR_DB_MIN = -30.0
"""Lowest SNR (Es/N0 [dB]) accepted anywhere in rkdsc."""
SNR_DB_MAX = 60.0
"""Highest SNR (Es/N0 [dB]) accepted anywhere in rkdsc."""


def check_finite(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; every value must be finite")


def check_complex(name: str, x: Tensor, *, ndim: int | None = None) -> None:
    """Raise ``TypeError`` unless ``x`` is a complex tensor (optionally of ``ndim`` dims)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(
            f"{name} must be complex (complex64), got {x.dtype}; "
            "map real features to symbols with rkdsc_core.channel.real_to_complex"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    check_finite(name, torch.view_as_real(x))


def check_snr_db(snr_db: Tensor | float, batch: int | None = None) -> Tensor:
    """Validate an SNR and return it as a float32 tensor of shape ``[]`` or ``[batch]``.

    Args:
        snr_db: Es/N0 per complex symbol [dB], a number or a tensor of shape ``[]``/``[batch]``.
        batch: the batch size the SNR must broadcast to, if known.
    """
    t = torch.as_tensor(snr_db, dtype=torch.float32)
    if t.ndim > 1 or (t.ndim == 1 and batch is not None and t.shape[0] not in (1, batch)):
        raise ValueError(
            f"snr_db must be a scalar or have shape [batch]={batch}, got shape {tuple(t.shape)}"
        )
    check_finite("snr_db", t)
    if bool((t < SNR_DB_MIN).any()) or bool((t > SNR_DB_MAX).any()):
        raise ValueError(
            f"snr_db must lie in [{SNR_DB_MIN:g}, {SNR_DB_MAX:g}] dB, got "
            f"min {float(t.min()):g} / max {float(t.max()):g}"
        )
    return t


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (and ``value`` is finite)."""
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
