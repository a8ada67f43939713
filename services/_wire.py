"""Wire format of symbols: raw little-endian complex64 bytes <-> torch tensors, validated."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["COMPLEX64_BYTES", "MAX_ABS_VALUE", "WireError", "from_wire", "to_wire"]

COMPLEX64_BYTES = 8
"""Bytes per complex symbol on the wire (float32 real, float32 imaginary, little-endian)."""

MAX_ABS_VALUE = 1e6
"""Largest real or imaginary part accepted on the wire.

Symbols carry Es = 1 and gains are O(1); even -30 dB noise stays below 1e3. Beyond this,
squares and sums in the channel and the receiver overflow float32 to inf and NaN.
"""


class WireError(ValueError):
    """A frame's bytes do not hold what its header says (maps to INVALID_ARGUMENT)."""


def to_wire(symbols: Tensor) -> bytes:
    """``[n]`` complex64 tensor -> ``8 n`` bytes, little-endian (re, im) float32 pairs."""
    if symbols.ndim != 1 or symbols.dtype != torch.complex64:
        raise WireError(
            f"symbols must be [n] complex64, got {tuple(symbols.shape)} {symbols.dtype}"
        )
    return symbols.detach().cpu().numpy().astype("<c8", copy=False).tobytes()


def from_wire(
    data: bytes, count: int, *, name: str = "symbols", max_count: int | None = None
) -> Tensor:
    """``8 count`` bytes -> ``[count]`` complex64 tensor; checks length, bounds and finiteness.

    Raises:
        WireError: naming the field, when the byte length is not ``8 * count``, ``count``
            exceeds ``max_count``, or any value is NaN/inf or beyond :data:`MAX_ABS_VALUE`.
    """
    if max_count is not None and count > max_count:
        raise WireError(f"{name}: {count} symbols exceed the maximum of {max_count}")
    if len(data) != COMPLEX64_BYTES * count:
        raise WireError(
            f"{name}: expected {count} complex64 symbols = {COMPLEX64_BYTES * count} bytes, "
            f"got {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype="<c8").astype(np.complex64)
    parts = arr.view(np.float32)
    if not np.isfinite(parts).all():
        raise WireError(f"{name}: NaN or inf in the symbols")
    peak = float(np.abs(parts).max()) if parts.size else 0.0
    if peak > MAX_ABS_VALUE:
        raise WireError(
            f"{name}: a value of magnitude {peak:.3g} exceeds {MAX_ABS_VALUE:g} "
            "(symbols have Es = 1)"
        )
    return torch.from_numpy(arr.copy())
