"""Batched, vectorised training augmentation: padded random crop (zero or reflect padding),
random horizontal flip, and cutout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PAD_MODES", "check_pad_mode", "cutout", "random_crop_flip"]

#: How :func:`random_crop_flip` fills the border it crops from.
PAD_MODES = ("zeros", "reflect")


def check_pad_mode(pad_mode: str, padding: int, side: int) -> None:
    """ValueError unless ``pad_mode`` is one of :data:`PAD_MODES` and, for reflection,
    ``padding`` is below the image ``side`` [pixels]."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if pad_mode == "reflect" and padding >= side:
        raise ValueError(f"reflect padding must be < the image side ({side} pixels), got {padding}")


def _batch_shape(images: Tensor) -> tuple[int, int, int]:
    """``(B, H, W)`` of an ``[B, C, H, W]`` batch; ValueError for any other rank."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    return b, h, w


def random_crop_flip(
    images: Tensor,
    *,
    generator: torch.Generator,
    padding: int = 4,
    flip: bool = True,
    pad_mode: str = "zeros",
) -> Tensor:
    """Pad each image with ``padding`` pixels per side, crop back to ``H x W`` at a random
    offset, and mirror it left-right with probability 1/2; one draw per image.

    Args:
        generator: the only source of randomness (on the CPU or on ``images``' device);
            the same generator state gives the same output.
        padding: padding per side [pixels], at most ``min(H, W) - 1`` for reflection;
            0 disables cropping.
        flip: whether to apply random horizontal flips.
        pad_mode: ``"zeros"`` (black borders, the classic CIFAR crop) or ``"reflect"``
            (the image mirrored at its edge, without repeating the edge pixel, as
            :func:`torch.nn.functional.pad`'s ``reflect``): no artificial edges.
            Both draw the same offsets and flips from ``generator``.

    Inputs:
        images: ``[B, C, H, W]``, any dtype and device.
    Outputs:
        ``[B, C, H, W]``, same dtype and device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop_flip(torch.rand(8, 3, 32, 32), generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    b, h, w = _batch_shape(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0 pixels, got {padding}")
    check_pad_mode(pad_mode, padding, min(h, w))
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
    if pad_mode == "reflect":  # index the image itself: row -k is row k, row H-1+k is H-1-k
        rows, cols = _reflect(rows - padding, h), _reflect(cols - padding, w)
        padded = images
    else:
        padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices in ``[-size + 1, 2 * size - 2]`` folded into ``[0, size)`` by reflection."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def cutout(images: Tensor, *, generator: torch.Generator, size: int, fill: float = 128) -> Tensor:
    """Cutout (DeVries and Taylor, 2017): fill one ``size x size`` square per image with
    ``fill``, centred at a uniformly drawn pixel (so the square may be cut by the border).

    Args:
        generator: the only source of randomness (on the CPU or on ``images``' device).
        size: side of the square [pixels], >= 1.
        fill: the value written, in ``images``' units (128 for uint8: mid-grey, near the
            CIFAR-10 mean, as the original's zero after normalisation).

    Inputs:
        images: ``[B, C, H, W]``, any dtype and device (not modified).
    Outputs:
        ``[B, C, H, W]``, same dtype and device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = cutout(torch.ones(2, 3, 32, 32), generator=g, size=8, fill=0.0)
        >>> bool((out == 0).any(dim=1).sum(dim=(1, 2)).le(64).all())
        True
    """
    b, h, w = _batch_shape(images)
    if size < 1:
        raise ValueError(f"cutout size must be >= 1 pixel, got {size}")
    gen_device = generator.device
    centres = torch.rand(b, 2, generator=generator, device=gen_device)
    centres = (centres * torch.tensor([h, w], device=gen_device)).long().to(images.device)
    top, left = centres[:, :1] - size // 2, centres[:, 1:] - size // 2  # [B, 1] each
    rows = torch.arange(h, device=images.device)  # [H]
    cols = torch.arange(w, device=images.device)  # [W]
    in_rows = (rows >= top) & (rows < top + size)  # [B, H]
    in_cols = (cols >= left) & (cols < left + size)  # [B, W]
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [B, 1, H, W]
    return images.masked_fill(mask, fill)
