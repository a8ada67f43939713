"""Tests of the (Fashion-)MNIST IDX decoder."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from rkdsc_core.data import FASHION_MNIST_DEBIAN_DIR, DataSourceError, load_dataset


class TestIdx:
    def test_shapes_dtypes_and_values(self, idx_plain, cache_dir) -> None:
        ds = load_dataset("fashion-mnist", "train", source=idx_plain.path, cache_dir=cache_dir)
        images, labels = idx_plain.splits["train"]
        assert ds.images.shape == (6, 28, 28, 1) and ds.images.dtype == np.uint8
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)

    def test_gz_and_plain_agree(self, idx_plain, idx_gz, cache_dir) -> None:
        plain = load_dataset("fashion-mnist", "test", source=idx_plain.path, cache_dir=cache_dir)
        packed = load_dataset("fashion-mnist", "test", source=idx_gz.path, cache_dir=cache_dir)
        np.testing.assert_array_equal(plain.images, packed.images)
        np.testing.assert_array_equal(plain.labels, packed.labels)

    def test_wrong_magic_raises(self, idx_plain, cache_dir) -> None:
        path = idx_plain.path / "t10k-images-idx3-ubyte"
        data = bytearray(path.read_bytes())
        data[3] = 0x02
        path.write_bytes(bytes(data))
        with pytest.raises(DataSourceError, match=r"magic 0x00000802, expected 0x00000803"):
            load_dataset("fashion-mnist", "test", source=idx_plain.path, cache_dir=cache_dir)

    def test_truncated_file_raises(self, idx_plain, cache_dir) -> None:
        path = idx_plain.path / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(DataSourceError, match="truncated or corrupt"):
            load_dataset("fashion-mnist", "train", source=idx_plain.path, cache_dir=cache_dir)

    def test_corrupt_gz_raises(self, idx_gz, cache_dir) -> None:
        path = idx_gz.path / "train-labels-idx1-ubyte.gz"
        path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(DataSourceError, match="truncated or corrupt"):
            load_dataset("fashion-mnist", "train", source=idx_gz.path, cache_dir=cache_dir)

    def test_image_label_count_mismatch_raises(self, idx_gz, build, cache_dir) -> None:
        labels = build.idx_bytes(np.zeros(3, np.uint8))
        (idx_gz.path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
        with pytest.raises(DataSourceError, match=r"4 images but .* 3 labels"):
            load_dataset("fashion-mnist", "test", source=idx_gz.path, cache_dir=cache_dir)

    def test_a_single_idx_file_means_its_folder(self, idx_gz, cache_dir) -> None:
        one = idx_gz.path / "train-images-idx3-ubyte.gz"
        ds = load_dataset("fashion-mnist", "train", source=one, cache_dir=cache_dir)
        assert len(ds) == 6

    @pytest.mark.skipif(
        not (FASHION_MNIST_DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
        reason="Debian package dataset-fashion-mnist is not installed",
    )
    def test_debian_package_is_the_default_source(self, cache_dir) -> None:
        ds = load_dataset("fashion-mnist", "test", cache_dir=cache_dir)
        assert ds.images.shape == (10_000, 28, 28, 1)
        assert ds.class_counts().tolist() == [1000] * 10
