"""Tests of the official CIFAR-10/100 binary decoder."""

from __future__ import annotations

import numpy as np
import pytest

from rkdsc_core.data import DataSourceError, load_dataset


class TestCifarBinary:
    def test_cifar10_folder_labels_and_pixels(self, cifar10_binary, cache_dir) -> None:
        ds = load_dataset("cifar10", "train", source=cifar10_binary.path, cache_dir=cache_dir)
        images, labels = cifar10_binary.splits["train"]
        assert ds.images.shape == (10, 32, 32, 3)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)

    def test_records_are_chw_planes(self, tmp_path, build, cache_dir) -> None:
        image = np.zeros((1, 32, 32, 3), np.uint8)
        image[0, 0, 1, 2] = 200  # row 0, column 1, blue
        labels = np.array([7])
        expected = build.write_cifar10_binary(tmp_path / "b", per_file=1)
        (expected.path / "test_batch.bin").write_bytes(build.cifar_records(image, labels))
        raw = (expected.path / "test_batch.bin").read_bytes()
        assert raw[0] == 7 and raw[1 + 2 * 1024 + 1] == 200
        ds = load_dataset("cifar10", "test", source=expected.path, cache_dir=cache_dir)
        np.testing.assert_array_equal(ds.images, image)

    def test_tar_gz_decodes_like_the_folder(self, cifar10_binary_tar, cache_dir) -> None:
        ds = load_dataset("cifar10", "test", source=cifar10_binary_tar.path, cache_dir=cache_dir)
        images, labels = cifar10_binary_tar.splits["test"]
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)

    def test_folder_holding_the_archive_is_found(self, cifar10_binary_tar, cache_dir) -> None:
        ds = load_dataset(
            "cifar10", "train", source=cifar10_binary_tar.path.parent, cache_dir=cache_dir
        )
        assert len(ds) == 10

    def test_cifar100_keeps_the_fine_label(self, cifar100_binary, cache_dir) -> None:
        ds = load_dataset("cifar100", "train", source=cifar100_binary.path, cache_dir=cache_dir)
        images, fine = cifar100_binary.splits["train"]
        np.testing.assert_array_equal(ds.labels, fine)
        np.testing.assert_array_equal(ds.images, images)
        assert len(ds.classes) == 100

    def test_wrong_record_size_raises(self, cifar10_binary, cache_dir) -> None:
        path = cifar10_binary.path / "test_batch.bin"
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(DataSourceError, match="not a whole number of 3073-byte"):
            load_dataset("cifar10", "test", source=cifar10_binary.path, cache_dir=cache_dir)

    def test_cifar100_file_read_as_cifar10_raises(self, cifar100_binary, cache_dir) -> None:
        with pytest.raises(DataSourceError, match="no CIFAR-10 source"):
            load_dataset("cifar10", "train", source=cifar100_binary.path, cache_dir=cache_dir)

    def test_missing_batch_file_in_archive_raises(self, tmp_path, build, cache_dir) -> None:
        expected = build.write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
        (expected.path / "data_batch_3.bin").unlink()
        archive = build.tar_folder(
            expected.path, tmp_path / "cifar-10-binary.tar.gz", prefix="cifar-10-batches-bin/"
        )
        with pytest.raises(DataSourceError, match=r"lacks data_batch_3\.bin"):
            load_dataset("cifar10", "train", source=archive, cache_dir=cache_dir)

    def test_label_out_of_range_raises(self, cifar10_binary, build, cache_dir) -> None:
        records = build.cifar_records(np.zeros((1, 32, 32, 3), np.uint8), np.array([12]))
        (cifar10_binary.path / "test_batch.bin").write_bytes(records)
        with pytest.raises(DataSourceError, match="label 12"):
            load_dataset("cifar10", "test", source=cifar10_binary.path, cache_dir=cache_dir)
