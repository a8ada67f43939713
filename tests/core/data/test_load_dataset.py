"""Tests of load_dataset/prepare_dataset: source lookup, errors and the checksum-keyed cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rkdsc_core.data import (
    DataSourceError,
    ImageDataset,
    cache_path,
    checksum,
    cifar_binary,
    imagefolder,
    load_dataset,
    prepare_dataset,
)
from rkdsc_core.data.checksum import sha256_file


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoder called although the cache should have been used")

    monkeypatch.setattr(imagefolder, "decode_imagefolder", boom)
    monkeypatch.setattr(cifar_binary, "decode_cifar_binary", boom)


class TestLoadDataset:
    def test_returns_image_dataset(self, image_tar, cache_dir) -> None:
        ds = load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        assert isinstance(ds, ImageDataset)
        assert (ds.name, ds.split) == ("cifar10", "train")
        assert ds.images.shape == (9, 32, 32, 3) and ds.images.dtype == np.uint8
        assert ds.labels.shape == (9,) and ds.labels.dtype == np.int64
        assert ds.source_sha256 == sha256_file(image_tar.path)

    def test_prepare_decodes_both_splits(self, image_tar, cache_dir) -> None:
        splits = prepare_dataset("cifar10", source=image_tar.path, cache_dir=cache_dir)
        assert {k: len(v) for k, v in splits.items()} == {"train": 9, "test": 6}

    def test_unknown_dataset_raises_value_error(self, image_tar, cache_dir) -> None:
        with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
            load_dataset("svhn", "train", source=image_tar.path, cache_dir=cache_dir)

    def test_unknown_split_raises_value_error(self, image_tar, cache_dir) -> None:
        with pytest.raises(ValueError, match="split must be one of train, test"):
            load_dataset("cifar10", "val", source=image_tar.path, cache_dir=cache_dir)  # type: ignore[arg-type]

    def test_missing_source_says_what_and_where(self, tmp_path, cache_dir) -> None:
        with pytest.raises(DataSourceError) as info:
            load_dataset("cifar10", "train", source=tmp_path / "nope", cache_dir=cache_dir)
        message = str(info.value)
        assert f"no CIFAR-10 source at {tmp_path / 'nope'}" in message
        assert "train/<class>/*" in message
        assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
        assert "RKDSC_DATA_DIR" in message

    def test_no_source_for_cifar_raises(self, cache_dir) -> None:
        with pytest.raises(DataSourceError, match="no CIFAR-10 source given"):
            load_dataset("cifar10", "train", source=None, cache_dir=cache_dir)

    def test_unrecognised_folder_raises(self, tmp_path, cache_dir) -> None:
        (tmp_path / "empty").mkdir()
        with pytest.raises(DataSourceError, match="no CIFAR-10 source at"):
            load_dataset("cifar10", "train", source=tmp_path / "empty", cache_dir=cache_dir)

    def test_data_root_with_named_subfolder_is_searched(self, tmp_path, build, cache_dir) -> None:
        build.write_tree(tmp_path / "root" / "cifar10")
        ds = load_dataset("cifar10", "test", source=tmp_path / "root", cache_dir=cache_dir)
        assert len(ds) == 6


class TestCache:
    def test_second_load_does_not_decode(self, image_tar, cache_dir, monkeypatch) -> None:
        first = load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        _forbid_decoding(monkeypatch)
        second = load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        np.testing.assert_array_equal(first.images, second.images)
        np.testing.assert_array_equal(first.labels, second.labels)

    def test_cached_arrays_are_read_only_memory_maps(self, image_tar, cache_dir) -> None:
        load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        ds = load_dataset("cifar10", "train", source=image_tar.path, cache_dir=cache_dir)
        assert isinstance(ds.images, np.memmap)
        assert not ds.images.flags.writeable

    def test_layout_is_keyed_by_source_sha256(self, image_tar, cache_dir) -> None:
        ds = load_dataset("cifar10", "test", source=image_tar.path, cache_dir=cache_dir)
        folder = cache_dir / "cifar10" / ds.source_sha256[:16]
        assert cache_path(cache_dir, "cifar10", ds.source_sha256) == folder
        assert {p.name for p in folder.iterdir()} == {
            "test-images.npy",
            "test-labels.npy",
            "test-manifest.json",
        }
        manifest = json.loads((folder / "test-manifest.json").read_text())
        assert manifest["count"] == 6
        assert manifest["source_sha256"] == ds.source_sha256
        assert manifest["arrays"]["images"]["shape"] == [6, 32, 32, 3]

    def test_changed_archive_gets_a_new_cache(self, tmp_path, build, cache_dir) -> None:
        build.write_tree(tmp_path / "a", seed=1)
        build.write_tree(tmp_path / "b", seed=2)
        archive = tmp_path / "data.tar.gz"
        build.tar_folder(tmp_path / "a", archive)
        first = load_dataset("cifar10", "test", source=archive, cache_dir=cache_dir)
        build.tar_folder(tmp_path / "b", archive)
        second = load_dataset("cifar10", "test", source=archive, cache_dir=cache_dir)
        assert first.source_sha256 != second.source_sha256
        assert not np.array_equal(first.images, second.images)
        assert len(list((cache_dir / "cifar10").iterdir())) == 2

    def test_changed_folder_tree_gets_a_new_cache(self, image_tree, build, cache_dir) -> None:
        first = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        path = image_tree.path / "test" / "cat" / "0000.png"
        path.write_bytes(build.png_bytes(np.full((32, 32, 3), 7, np.uint8)))
        os.utime(path, ns=(1, 1))
        second = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        assert first.source_sha256 != second.source_sha256
        assert (second.images[2] == 7).all()

    def test_folder_hash_ignores_unrelated_files(self, image_tree, cache_dir) -> None:
        first = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        (image_tree.path / "README.txt").write_text("notes")
        second = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        assert first.source_sha256 == second.source_sha256

    def test_unchanged_folder_is_not_rehashed(self, image_tree, cache_dir, monkeypatch) -> None:
        first = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)

        def boom(*args: object) -> str:
            raise AssertionError("tree re-hashed although nothing changed")

        monkeypatch.setattr(checksum, "_tree_digest", boom)
        second = load_dataset("cifar10", "test", source=image_tree.path, cache_dir=cache_dir)
        assert second.source_sha256 == first.source_sha256

    def test_missing_manifest_means_rebuild(self, image_tar, cache_dir, monkeypatch) -> None:
        ds = load_dataset("cifar10", "test", source=image_tar.path, cache_dir=cache_dir)
        folder = cache_path(cache_dir, "cifar10", ds.source_sha256)
        (folder / "test-manifest.json").unlink()
        self._assert_rebuilt(image_tar, cache_dir, monkeypatch, folder)

    def test_truncated_array_means_rebuild(self, image_tar, cache_dir, monkeypatch) -> None:
        ds = load_dataset("cifar10", "test", source=image_tar.path, cache_dir=cache_dir)
        folder = cache_path(cache_dir, "cifar10", ds.source_sha256)
        images = folder / "test-images.npy"
        images.write_bytes(images.read_bytes()[:-100])
        self._assert_rebuilt(image_tar, cache_dir, monkeypatch, folder)

    def test_altered_array_means_rebuild(self, image_tar, cache_dir, monkeypatch) -> None:
        ds = load_dataset("cifar10", "test", source=image_tar.path, cache_dir=cache_dir)
        folder = cache_path(cache_dir, "cifar10", ds.source_sha256)
        images = folder / "test-images.npy"
        data = bytearray(images.read_bytes())
        data[-1] ^= 0xFF
        images.write_bytes(bytes(data))
        self._assert_rebuilt(image_tar, cache_dir, monkeypatch, folder)

    def test_unparsable_manifest_means_rebuild(self, image_tar, cache_dir, monkeypatch) -> None:
        ds = load_dataset("cifar10", "test", source=image_tar.path, cache_dir=cache_dir)
        folder = cache_path(cache_dir, "cifar10", ds.source_sha256)
        (folder / "test-manifest.json").write_text('{"format": 1, "arra')
        self._assert_rebuilt(image_tar, cache_dir, monkeypatch, folder)

    def test_no_temporary_files_left_behind(self, image_tar, cache_dir) -> None:
        prepare_dataset("cifar10", source=image_tar.path, cache_dir=cache_dir)
        leftovers = [p for p in cache_dir.rglob("*") if p.name.startswith(".tmp")]
        assert leftovers == []

    @staticmethod
    def _assert_rebuilt(expected, cache_dir: Path, monkeypatch, folder: Path) -> None:
        calls = []
        real = imagefolder.decode_imagefolder

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(imagefolder, "decode_imagefolder", counting)
        ds = load_dataset("cifar10", "test", source=expected.path, cache_dir=cache_dir)
        assert len(calls) == 1
        np.testing.assert_array_equal(ds.images, expected.splits["test"][0])
        assert (folder / "test-manifest.json").is_file()
        _forbid_decoding(monkeypatch)
        again = load_dataset("cifar10", "test", source=expected.path, cache_dir=cache_dir)
        np.testing.assert_array_equal(again.images, expected.splits["test"][0])


class TestImageDataset:
    def _dataset(self, n: int = 5) -> ImageDataset:
        images = np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3)
        labels = np.arange(n, dtype=np.int64) % 3
        return ImageDataset("cifar10", "train", ("a", "b", "c"), images, labels, "0" * 64)

    def test_subset_takes_rows(self) -> None:
        ds = self._dataset()
        sub = ds.subset([4, 0])
        assert len(sub) == 2
        np.testing.assert_array_equal(sub.images, ds.images[[4, 0]])
        assert sub.labels.tolist() == [1, 0]
        assert sub.classes == ds.classes

    def test_subset_out_of_range_raises(self) -> None:
        with pytest.raises(IndexError):
            self._dataset().subset([5])

    def test_class_counts(self) -> None:
        assert self._dataset().class_counts().tolist() == [2, 2, 1]

    def test_rejects_float_images(self) -> None:
        with pytest.raises(ValueError, match="uint8"):
            ImageDataset("x", "train", ("a",), np.zeros((1, 2, 2, 3)), np.zeros(1, np.int64), "")

    def test_rejects_out_of_range_labels(self) -> None:
        with pytest.raises(ValueError, match="labels must lie in"):
            ImageDataset(
                "x", "train", ("a",), np.zeros((1, 2, 2, 3), np.uint8), np.ones(1, np.int64), ""
            )

    def test_is_frozen(self) -> None:
        ds = self._dataset()
        with pytest.raises(AttributeError):
            ds.name = "other"  # type: ignore[misc]


class TestSample:
    def test_seeded_subset_mixes_sorted_classes(self) -> None:
        import numpy as np

        from rkdsc_core.data import ImageDataset

        labels = np.repeat(np.arange(10), 50)
        ds = ImageDataset(
            name="cifar10",
            split="test",
            classes=tuple(str(i) for i in range(10)),
            images=np.zeros((500, 2, 2, 3), dtype=np.uint8),
            labels=labels,
            source_sha256="x",
        )
        a, b = ds.sample(100, seed=3), ds.sample(100, seed=3)
        assert len(a) == 100 and np.array_equal(a.labels, b.labels)
        assert len(np.unique(a.labels)) == 10
        assert not np.array_equal(a.labels, ds.sample(100, seed=4).labels)
        # sample_indices says which images sample takes, for arrays kept beside the dataset.
        idx = ds.sample_indices(100, seed=3)
        assert idx.dtype == np.int64 and np.array_equal(ds.labels[idx], a.labels)
        assert len(ds.sample_indices(None)) == 500 and len(ds.sample_indices(900)) == 500
