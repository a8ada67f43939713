"""Tests of download(): checksum verification and atomic placement, via file:// URLs only."""

from __future__ import annotations

import stat

import pytest

from rkdsc_core.checkpoint import current_umask
from rkdsc_core.data import DataSourceError, download, load_dataset
from rkdsc_core.data.download import md5_file


class TestDownload:
    def test_verified_archive_is_placed_and_loadable(
        self, tmp_path, cifar10_binary_tar, cache_dir
    ) -> None:
        url = cifar10_binary_tar.path.as_uri()
        dest = tmp_path / "downloads"
        path = download("cifar10", dest, url=url, md5=md5_file(cifar10_binary_tar.path))
        assert path == dest / "cifar-10-binary.tar.gz"
        assert path.read_bytes() == cifar10_binary_tar.path.read_bytes()
        assert len(load_dataset("cifar10", "train", source=path, cache_dir=cache_dir)) == 10
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()  # not 0600

    def test_checksum_mismatch_raises_and_leaves_nothing(
        self, tmp_path, cifar10_binary_tar
    ) -> None:
        dest = tmp_path / "downloads"
        with pytest.raises(DataSourceError, match=r"checksum mismatch.*expected 0{32}"):
            download("cifar10", dest, url=cifar10_binary_tar.path.as_uri(), md5="0" * 32)
        assert list(dest.iterdir()) == []

    def test_default_checksum_is_the_published_one(self, tmp_path, cifar10_binary_tar) -> None:
        with pytest.raises(DataSourceError, match="expected c32a1d4ab5d03f1284b67883e8d87530"):
            download("cifar10", tmp_path / "d", url=cifar10_binary_tar.path.as_uri())

    def test_present_file_with_right_md5_is_kept(self, tmp_path, cifar10_binary_tar) -> None:
        md5 = md5_file(cifar10_binary_tar.path)
        dest = tmp_path / "d"
        download("cifar10", dest, url=cifar10_binary_tar.path.as_uri(), md5=md5)
        gone = (tmp_path / "gone.tar.gz").as_uri()
        assert download("cifar10", dest, url=gone, md5=md5) == dest / "cifar-10-binary.tar.gz"

    def test_unreachable_url_raises(self, tmp_path) -> None:
        dest = tmp_path / "d"
        with pytest.raises(DataSourceError, match="could not download"):
            download("cifar10", dest, url=(tmp_path / "missing").as_uri(), md5="0" * 32)
        assert list(dest.iterdir()) == []

    def test_override_needs_a_single_file_release(self, tmp_path) -> None:
        with pytest.raises(ValueError, match="single-file release"):
            download("fashion-mnist", tmp_path, url="file:///x", md5="0" * 32)
