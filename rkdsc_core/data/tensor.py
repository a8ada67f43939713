"""Conversion of uint8 NHWC image batches to the float NCHW tensors every model takes."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rkdsc_core.data._types import UInt8Array

__all__ = ["to_tensor"]


def to_tensor(images: UInt8Array | Tensor) -> Tensor:
    """Turn a uint8 image batch into model input.

    Inputs:
        images: ``[B, H, W, C]`` uint8 (numpy or torch, any device), C = 3 (RGB) or 1 (gray).
    Outputs:
        ``[B, 3, H, W]`` float32 in [0, 1] on the input's device; grayscale is replicated to
        three channels so every model takes three.
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        arr = images if images.flags.writeable else images.copy()
        x = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(images, Tensor):
        x = images
    else:
        raise TypeError(f"images must be a numpy array or torch.Tensor, got {type(images)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape [B, H, W, 1 or 3], got {tuple(x.shape)}")
    out = x.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1).contiguous()
    return out
