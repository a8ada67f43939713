"""Wire format of symbols: raw little-endian complex64 bytes <-> torch tensors, validated."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["COMPLEX64_BYTES", "WireError", "from_wire", "to_wire"]

COMPLEX64_BYTES = 8
"""Bytes per complex symbol on the wire (float32 real, float32 imaginary, little-endian)."""


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
    """``8 count`` bytes -> ``[count]`` complex64 tensor; checks length, bound and finiteness.

    Raises:
        WireError: naming the field, when the byte length is not ``8 * count``, ``count``
            exceeds ``max_count``, or any value is NaN/inf.
    """
    if max_count is not None and count > max_count:
        raise WireError(f"{name}: {count} symbols exceed the maximum of {max_count}")
    if len(data) != COMPLEX64_BYTES * count:
        raise WireError(
            f"{name}: expected {count} complex64 symbols = {COMPLEX64_BYTES * count} bytes, "
            f"got {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype="<c8").astype(np.complex64)
    if not np.isfinite(arr.view(np.float32)).all():
        raise WireError(f"{name}: NaN or inf in the symbols")
    return torch.from_numpy(arr.copy())
