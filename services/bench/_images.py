"""The benchmark images: a fixed sample of the CIFAR-10 test split, or labelled synthetic ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from rkdsc_core.data import DataSourceError, load_dataset

__all__ = ["BenchImages", "load_images", "synthetic_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BenchImages:
    """The images every benchmark of one run uses.

    Attributes:
        pixels: ``[N, H, W, 3]`` uint8.
        labels: ``[N]`` int64 class indices (random for synthetic images).
        source: where they came from, said plainly (``cifar10 test, sample(N, seed=0)`` or
            ``SYNTHETIC ...``).
        synthetic: True when no dataset was available.
    """

    pixels: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    source: str
    synthetic: bool

    def __len__(self) -> int:
        return len(self.labels)


def synthetic_images(n: int, *, size: int = 32, seed: int = 0) -> BenchImages:
    """``n`` smooth random colour fields (8x8 noise upscaled bicubically, plus mild pixel
    noise) with random labels: they compress roughly like photographs, unlike white noise."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pixels = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        smooth = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.int16
        )
        noisy = smooth + rng.integers(-8, 9, smooth.shape, dtype=np.int16)
        pixels[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.int64)
    return BenchImages(
        pixels,
        labels,
        f"SYNTHETIC: {n} smooth random {size}x{size} images (no dataset available)",
        True,
    )


def load_images(
    n: int, *, source: Path | None, cache_dir: Path | None, seed: int = 0
) -> BenchImages:
    """``n`` CIFAR-10 test images (``ImageDataset.sample(n, seed)``) from ``source``, or
    :func:`synthetic_images` when ``source`` is ``None`` or cannot be read (logged)."""
    if source is not None and cache_dir is not None:
        try:
            ds = load_dataset("cifar10", "test", source=source, cache_dir=cache_dir)
        except (DataSourceError, OSError) as err:
            log.warning("no CIFAR-10 from %s (%s); using synthetic images", source, err)
        else:
            sample = ds.sample(min(n, len(ds)), seed=seed)
            pixels = sample.images
            if pixels.shape[-1] == 1:
                pixels = np.repeat(pixels, 3, axis=-1)
            return BenchImages(
                np.ascontiguousarray(pixels),
                sample.labels,
                f"cifar10 test split, sample({len(sample)}, seed={seed}) of {source}",
                False,
            )
    return synthetic_images(n, seed=seed)
