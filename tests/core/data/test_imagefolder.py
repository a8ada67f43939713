"""Tests of the image-folder decoder (folder trees and streamed .tar.gz)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from rkdsc_core.data import DataSourceError, load_dataset
from rkdsc_core.data.specs import FASHION_MNIST_CLASSES


class TestImageFolder:
    def test_labels_follow_canonical_class_order(self, image_tree, cache_dir) -> None:
        ds = load_dataset("cifar10", "train", source=image_tree.path, cache_dir=cache_dir)
        assert ds.labels.tolist() == [0, 0, 0, 3, 3, 3, 9, 9, 9]
        assert ds.classes[3] == "cat"

    def test_pixels_round_trip(self, image_tree, cache_dir) -> None:
        ds = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        images, labels = image_tree.splits["test"]
        assert ds.images.shape == (6, 32, 32, 3)
        assert ds.images.dtype == np.uint8
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)

    def test_tar_gz_decodes_like_the_folder(self, image_tar, cache_dir) -> None:
        ds = load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        images, labels = image_tar.splits["train"]
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)

    def test_tar_with_top_level_folder(self, tmp_path, image_tree, build, cache_dir) -> None:
        archive = build.tar_folder(image_tree.path, tmp_path / "x.tar.gz", prefix="cifar10/")
        ds = load_dataset("cifar10", "test", source=archive, cache_dir=cache_dir)
        np.testing.assert_array_equal(ds.images, image_tree.splits["test"][0])

    def test_tar_with_two_trees_is_refused_not_merged(
        self, tmp_path, image_tree, build, cache_dir
    ) -> None:
        twice = tmp_path / "both"
        shutil.copytree(image_tree.path, twice / "cifar10")
        shutil.copytree(image_tree.path, twice / "old" / "cifar10")
        archive = build.tar_folder(twice, tmp_path / "both.tar.gz")
        with pytest.raises(DataSourceError, match="more than one dataset tree"):
            load_dataset("cifar10", "train", source=archive, cache_dir=cache_dir)

    def test_hidden_class_folders_in_a_tar_are_skipped_as_in_a_tree(
        self, tmp_path, image_tree, build, cache_dir
    ) -> None:
        shutil.copytree(image_tree.path / "train" / "cat", image_tree.path / "train" / ".trash")
        archive = build.tar_folder(image_tree.path, tmp_path / "x.tar.gz")
        from_tar = load_dataset("cifar10", "train", source=archive, cache_dir=cache_dir)
        from_tree = load_dataset("cifar10", "train", source=image_tree.path, cache_dir=cache_dir)
        assert len(from_tar) == len(from_tree) == 9

    def test_unknown_class_folder_raises(self, tmp_path, build, cache_dir) -> None:
        root = tmp_path / "bad"
        build.write_tree(root, ("cat",))
        (root / "train" / "cat").rename(root / "train" / "cats")
        with pytest.raises(DataSourceError, match=r"'cats'.*airplane, automobile"):
            load_dataset("cifar10", "train", source=root, cache_dir=cache_dir)

    def test_truncated_tar_gz_raises(self, tmp_path, image_tar, cache_dir) -> None:
        data = image_tar.path.read_bytes()
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(DataSourceError, match="truncated or corrupt"):
            load_dataset("cifar10", "test", source=cut, cache_dir=cache_dir)

    def test_garbage_archive_raises(self, tmp_path, cache_dir) -> None:
        junk = tmp_path / "junk.tar.gz"
        junk.write_bytes(gzip.compress(b"not a tar file at all" * 100)[:-8] + b"\0" * 8)
        with pytest.raises(DataSourceError, match=r"cifar-10-binary\.tar\.gz"):
            load_dataset("cifar10", "train", source=junk, cache_dir=cache_dir)

    def test_wrong_image_size_raises(self, tmp_path, build, cache_dir) -> None:
        root = tmp_path / "big"
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "0.png").write_bytes(
            build.png_bytes(np.zeros((64, 64, 3), np.uint8))
        )
        with pytest.raises(DataSourceError, match=r"64x64.*32x32"):
            load_dataset("cifar10", "train", source=root, cache_dir=cache_dir)

    def test_undecodable_image_raises(self, image_tree, cache_dir) -> None:
        (image_tree.path / "train" / "cat" / "0001.png").write_bytes(b"\x89PNG broken")
        with pytest.raises(DataSourceError, match="cannot decode image"):
            load_dataset("cifar10", "train", source=image_tree.path, cache_dir=cache_dir)

    def test_missing_split_raises(self, image_tree, cache_dir) -> None:
        shutil.rmtree(image_tree.path / "test")
        with pytest.raises(DataSourceError, match="no test/<class>/"):
            load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)

    def test_hidden_files_are_ignored(self, image_tree, cache_dir) -> None:
        (image_tree.path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
        ds = load_dataset("cifar10", "train", source=image_tree.path, cache_dir=cache_dir)
        assert len(ds) == 9

    def test_grayscale_tree_for_fashion_mnist(self, tmp_path, build, cache_dir) -> None:
        root = tmp_path / "fm"
        expected = build.write_tree(
            root, ("trouser", "bag"), shape=(28, 28, 1), all_classes=FASHION_MNIST_CLASSES
        )
        ds = load_dataset("fashion-mnist", "train", source=root, cache_dir=cache_dir)
        assert ds.images.shape == (6, 28, 28, 1)
        np.testing.assert_array_equal(ds.images, expected.splits["train"][0])
        assert ds.labels.tolist() == [1, 1, 1, 8, 8, 8]

    def test_tar_is_read_without_extracting(self, tmp_path, image_tar, cache_dir) -> None:
        before = set(tmp_path.rglob("*"))
        load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        created = set(tmp_path.rglob("*")) - before
        assert created
        assert all(cache_dir in p.parents or p == cache_dir for p in created)
