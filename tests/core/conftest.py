import numpy as np
import pytest

from rkdsc_core.data import ImageDataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    """40 random 32x32 images, 4 per class (labels sorted, like an image folder)."""
    rng = np.random.default_rng(0)
    return ImageDataset(
        name="cifar10",
        split="test",
        classes=CLASSES,
        images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
        labels=np.repeat(np.arange(10), 4).astype(np.int64),
        source_sha256="0" * 64,
    )
