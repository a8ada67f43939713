"""What the search needs from a teacher: logits (and features) per training image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rkdsc_core.data import ImageDataset
from rkdsc_core.distill import load_teacher_cache

__all__ = ["Teacher", "TeacherOutputs", "load_teacher_outputs"]


@runtime_checkable
class Teacher(Protocol):
    """A teacher as the search sees it: frozen outputs for dataset positions.

    ``feature_dim`` is the teacher feature size ``D`` (``None``: logits only, no feature
    distillation). Calling it with a batch of images ``[batch, 3, H, W]`` float32 and their
    positions ``[batch]`` int64 in the dataset passed to the search returns
    ``(logits [batch, classes], features [batch, D] | None)``; it is called under
    ``no_grad``. A cache answers from the positions, a live teacher from the images.
    """

    @property
    def feature_dim(self) -> int | None: ...

    def __call__(self, images: Tensor, indices: Tensor) -> tuple[Tensor, Tensor | None]: ...


@dataclass(frozen=True, eq=False)
class TeacherOutputs:
    """Precomputed teacher outputs for every image of a dataset split, in dataset order.

    Attributes:
        logits: ``[N, classes]`` float (the teacher's class logits).
        features: ``[N, D]`` float (its pooled feature, the distillation target) or ``None``.
        source: where the outputs come from, for manifests (for a cache: ``cache`` path and
            the teacher's ``model``, ``path``, ``weights_sha256``, ``metrics``) or ``None``.
    """

    logits: Tensor
    features: Tensor | None = None
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 2:
            raise ValueError(f"logits must be [N, classes], got {tuple(self.logits.shape)}")
        if self.features is not None and (
            self.features.ndim != 2 or self.features.shape[0] != self.logits.shape[0]
        ):
            raise ValueError(
                f"features must be [N, D] with N = {self.logits.shape[0]} (the logits' N), "
                f"got {tuple(self.features.shape)}"
            )

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def feature_dim(self) -> int | None:
        """``D``, or ``None`` without features."""
        return None if self.features is None else int(self.features.shape[1])

    def __call__(self, images: Tensor, indices: Tensor) -> tuple[Tensor, Tensor | None]:
        idx = indices.cpu()
        logits = self.logits[idx].to(images.device, torch.float32)
        if self.features is None:
            return logits, None
        return logits, self.features[idx].to(images.device, torch.float32)


def load_teacher_outputs(path: Path | str, dataset: ImageDataset | None = None) -> TeacherOutputs:
    """The un-augmented view (view 0) of a teacher-output cache, as :class:`TeacherOutputs`.

    ``path`` names a cache written by :func:`rkdsc_core.distill.build_teacher_cache`
    (``rkdsc train cache-teacher``); with ``dataset`` given, the cache must have been built
    on exactly that split (its fingerprint is checked). Only view 0 is used: the search
    trains on un-augmented images (``SearchConfig.augment=False``), for which view 0 holds
    the teacher's outputs.

    Raises:
        ValueError: (``TeacherCacheError``) missing, corrupt, or built on another dataset.
    """
    cache = load_teacher_cache(path, dataset=dataset)
    source = {"cache": str(path)} | dict(cache.manifest["teacher"])
    return TeacherOutputs(cache.logits[0], cache.features[0], source)
