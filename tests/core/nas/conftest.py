"""Tiny search fixtures: 64 random 32x32 images and a 3-cell, C=4 supernet at 16 px."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from rkdsc_core.data import ImageDataset
from rkdsc_core.nas import SearchConfig

CLASSES = tuple(f"c{i}" for i in range(10))

TINY = SearchConfig(
    C=4,
    layers=3,
    input_size=16,
    epochs=2,
    batch_size=8,
    subset=32,
    use_kd=False,
    lam=0.0,
)
"""3 cells (normal, reduction, reduction), C=4, 16 px, batch 8; subset 32 -> 16 + 16
images -> 2 steps per epoch."""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions gain nothing from threads, and two OpenMP threads on a shared
    # 2-core machine spin against each other (a 0.2 s step becomes 30 s).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def search_data() -> ImageDataset:
    """64 random 32x32 RGB images, labels cycling over 10 classes."""
    rng = np.random.default_rng(0)
    return ImageDataset(
        name="cifar10",
        split="train",
        classes=CLASSES,
        images=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        labels=(np.arange(64) % 10).astype(np.int64),
        source_sha256="0" * 64,
    )
