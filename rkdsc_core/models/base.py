"""The interface every teacher and student implements: images -> feature tokens -> logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "Backbone", "ImageNormalize"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel mean of the CIFAR-10 training images (RGB, in [0, 1])."""
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel standard deviation of the CIFAR-10 training images (RGB, in [0, 1])."""


class ImageNormalize(nn.Module):
    """Resize (bilinear, if ``size`` is set) and standardise images.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        ``[batch, 3, size, size]`` (or ``[batch, 3, H, W]``) float32, ``(x - mean) / std``.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, mean: tuple[float, ...], std: tuple[float, ...], *, size: int | None = None
    ) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"images must have shape [batch, {self.mean.shape[1]}, H, W], "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"images must be float in [0, 1], got {images.dtype}; divide uint8 by 255"
            )
        x = images
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """Base class of teachers and students.

    Subclasses set ``num_classes``, ``feature_dim`` and ``num_tokens`` and implement
    :meth:`forward_tokens` and :meth:`forward_head`. Every model takes raw images
    (``[batch, 3, H, W]`` float32 in [0, 1]) and does its own resizing and normalisation,
    so services and data loaders never need to know a model's preprocessing.
    """

    num_classes: int
    feature_dim: int
    num_tokens: int
    #: Native (square) input resolution used by :meth:`example_inputs` [pixels].
    input_size: int = 32

    @property
    def token_dim(self) -> int:
        """``D`` of :meth:`forward_tokens`: ``feature_dim``, unless :meth:`pool` projects the
        tokens to another size (CLIP)."""
        return self.feature_dim

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> feature tokens ``[batch, T, D]`` float32."""
        raise NotImplementedError

    def forward_head(self, tokens: Tensor) -> Tensor:
        """Feature tokens ``[batch, T, D]`` -> class logits ``[batch, num_classes]``."""
        return self.classify(self.pool(tokens))

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled feature ``[batch, feature_dim]`` -> class logits ``[batch, num_classes]``."""
        return self.head(pooled)  # type: ignore[no-any-return,operator]

    def pool(self, tokens: Tensor) -> Tensor:
        """Feature tokens ``[batch, T, D]`` -> pooled ``[batch, D]`` (the distillation target)."""
        return tokens.mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> logits ``[batch, num_classes]``."""
        return self.forward_head(self.forward_tokens(images))

    def example_inputs(self, batch: int = 1) -> tuple[Tensor, ...]:
        """A valid input at the native size: ``(images [batch, 3, input_size, input_size],)``."""
        return (torch.rand(batch, 3, self.input_size, self.input_size),)
