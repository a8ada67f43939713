"""``ImageDataset``: one decoded split as uint8 NHWC images and int64 labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rkdsc_core.data._types import Int64Array, UInt8Array
from rkdsc_core.data.specs import Split

__all__ = ["ImageDataset"]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of a dataset, held as arrays (possibly read-only memory maps of the cache).

    Attributes:
        name: dataset name (``cifar10``).
        split: ``"train"`` or ``"test"``.
        classes: class names in label order.
        images: ``[N, H, W, C]`` uint8, C = 3 (RGB) or 1 (grayscale).
        labels: ``[N]`` int64 in ``[0, len(classes))``.
        source_sha256: sha256 (hex) of the source the arrays were decoded from.
    """

    name: str
    split: Split
    classes: tuple[str, ...]
    images: UInt8Array
    labels: Int64Array
    source_sha256: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be [N, H, W, C] uint8, got shape {self.images.shape} "
                f"dtype {self.images.dtype}"
            )
        if self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {self.images.shape[-1]}")
        if self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise ValueError(
                f"labels must be [N] int64, got shape {self.labels.shape} dtype {self.labels.dtype}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(
                f"images and labels differ in length: {len(self.images)} vs {len(self.labels)}"
            )
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got out-of-range")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        h, w, c = self.images.shape[1:]
        return (h, w, c)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> ImageDataset:
        """A new in-memory dataset holding ``images[indices]``, ``labels[indices]``.

        Args:
            indices: ``[M]`` integer positions (any order, repeats allowed).
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} images")
        return ImageDataset(
            name=self.name,
            split=self.split,
            classes=self.classes,
            images=np.ascontiguousarray(self.images[idx]),
            labels=np.ascontiguousarray(self.labels[idx]),
            source_sha256=self.source_sha256,
        )

    def sample(self, limit: int | None, *, seed: int = 0) -> ImageDataset:
        """A fixed, seeded random subset of ``limit`` images (all of them if ``None``).

        Sources are often sorted by class, so "the first N images" would be one class;
        evaluation and services take ``sample(N)`` instead. The images are
        :meth:`sample_indices`, in that order: the same for every caller.
        """
        return self.subset(self.sample_indices(limit, seed=seed))

    def sample_indices(self, limit: int | None, *, seed: int = 0) -> npt.NDArray[np.int64]:
        """``[min(limit, N)]`` int64: which images :meth:`sample` takes, in its order (the
        start of a permutation drawn from ``numpy.random.default_rng(seed)``), for arrays
        kept beside the dataset (a teacher cache, say)."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        order = np.random.default_rng(seed).permutation(len(self)).astype(np.int64)
        return order[: limit if limit is not None else len(self)]

    def class_counts(self) -> npt.NDArray[np.int64]:
        """``[len(classes)]`` int64: how many images each class has."""
        return np.bincount(self.labels, minlength=len(self.classes)).astype(np.int64)
