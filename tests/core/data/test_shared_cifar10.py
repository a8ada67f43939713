"""End-to-end check on the real CIFAR-10 JPEG archive shared with the project, if present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rkdsc_core.data import BatchLoader, ImageDataset, load_dataset, prepare_dataset

SHARED_ARCHIVE = Path("/work/shared/datasets/cifar10/cifar10-jpeg.tar.gz")
SHARED_SHA256 = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason=f"{SHARED_ARCHIVE} not present"),
]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding both decoded splits of the shared archive (decoded once per session)."""
    cache = tmp_path_factory.mktemp("cifar10-cache")
    prepare_dataset("cifar10", source=SHARED_ARCHIVE, cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def cifar_train(shared_cache: Path) -> ImageDataset:
    return load_dataset("cifar10", "train", source=SHARED_ARCHIVE, cache_dir=shared_cache)


@pytest.fixture(scope="session")
def cifar_test(shared_cache: Path) -> ImageDataset:
    return load_dataset("cifar10", "test", source=SHARED_ARCHIVE, cache_dir=shared_cache)


class TestSharedCifar10:
    def test_checksum_matches_the_readme(self, cifar_train: ImageDataset) -> None:
        assert cifar_train.source_sha256 == SHARED_SHA256

    def test_split_sizes_and_shapes(
        self, cifar_train: ImageDataset, cifar_test: ImageDataset
    ) -> None:
        assert cifar_train.images.shape == (50_000, 32, 32, 3)
        assert cifar_test.images.shape == (10_000, 32, 32, 3)
        assert cifar_train.images.dtype == np.uint8 and cifar_train.labels.dtype == np.int64

    def test_classes_are_balanced(
        self, cifar_train: ImageDataset, cifar_test: ImageDataset
    ) -> None:
        assert cifar_train.class_counts().tolist() == [5000] * 10
        assert cifar_test.class_counts().tolist() == [1000] * 10

    def test_per_channel_mean(self, cifar_train: ImageDataset) -> None:
        mean = cifar_train.images.reshape(-1, 3).mean(axis=0, dtype=np.float64) / 255.0
        np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=0.001)

    def test_loader_yields_a_full_epoch(self, cifar_test: ImageDataset) -> None:
        loader = BatchLoader(cifar_test, 1000, shuffle=True, augment=True, seed=0)
        assert sum(len(y) for _, y in loader) == 10_000
