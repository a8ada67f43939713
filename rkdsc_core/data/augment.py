"""Batched, vectorised training augmentation: zero-pad + random crop and random horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop_flip"]


def random_crop_flip(
    images: Tensor,
    *,
    generator: torch.Generator,
    padding: int = 4,
    flip: bool = True,
) -> Tensor:
    """Pad each image with ``padding`` zeros per side, crop back to ``H x W`` at a random
    offset, and mirror it left-right with probability 1/2; one draw per image.

    Args:
        generator: the only source of randomness (on the CPU or on ``images``' device);
            the same generator state gives the same output.
        padding: zero padding per side [pixels]; 0 disables cropping.
        flip: whether to apply random horizontal flips.

    Inputs:
        images: ``[B, C, H, W]``, any dtype and device.
    Outputs:
        ``[B, C, H, W]``, same dtype and device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop_flip(torch.rand(8, 3, 32, 32), generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0 pixels, got {padding}")
    b, _, h, w = images.shape
    gen_device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator, device=gen_device)
    flips = (
        torch.rand(b, generator=generator, device=gen_device) < 0.5
        if flip
        else torch.zeros(b, dtype=torch.bool, device=gen_device)
    )
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()
