"""Tests of the `rkdsc data` commands (prepare, info, download) through the Typer app."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from rkdsc_core.cli import app
from rkdsc_core.data import DATASETS, RemoteFile
from rkdsc_core.data.download import md5_file


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner with no RKDSC_* data settings inherited from the environment."""
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


class TestDataCli:
    def test_info_json_lists_every_dataset(self, runner) -> None:
        result = runner.invoke(app, ["data", "info", "--json"])
        assert result.exit_code == 0, result.output
        table = json.loads(result.stdout)
        assert [row["name"] for row in table] == list(DATASETS)
        assert table[0]["classes"][0] == "airplane"
        assert table[0]["downloads"][0]["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"

    def test_info_text_shows_shapes(self, runner) -> None:
        result = runner.invoke(app, ["data", "info"])
        assert result.exit_code == 0
        assert "fashion-mnist" in result.stdout and "28x28x1" in result.stdout

    def test_prepare_prints_counts_and_checksum(self, runner, image_tar, cache_dir) -> None:
        args = ["data", "prepare", "--dataset", "cifar10", "--data", str(image_tar.path)]
        result = runner.invoke(app, [*args, "--cache-dir", str(cache_dir), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["splits"]["train"]["count"] == 9
        assert report["splits"]["test"]["class_counts"][3] == 2
        assert (cache_dir / "cifar10" / report["source_sha256"][:16]).is_dir()

    def test_prepare_reads_rkdsc_data_dir(self, runner, image_tree, cache_dir) -> None:
        result = runner.invoke(
            app,
            ["data", "prepare", "--cache-dir", str(cache_dir)],
            env={"RKDSC_DATA_DIR": str(image_tree.path)},
        )
        assert result.exit_code == 0, result.output
        assert "train  9 images of 32x32x3" in result.stdout

    def test_prepare_missing_source_exits_2_without_traceback(self, runner, tmp_path) -> None:
        result = runner.invoke(
            app, ["data", "prepare", "--data", str(tmp_path / "nope"), "--cache-dir", str(tmp_path)]
        )
        assert result.exit_code == 2
        assert "error: no CIFAR-10 source at" in result.stderr
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_prepare_unknown_dataset_exits_2(self, runner, tmp_path) -> None:
        result = runner.invoke(app, ["data", "prepare", "-d", "svhn", "--data", str(tmp_path)])
        assert result.exit_code == 2
        assert "unknown dataset 'svhn'" in result.stderr

    def test_download_fetches_into_dest(
        self, runner, monkeypatch, tmp_path, cifar10_binary_tar
    ) -> None:
        remote = RemoteFile(
            cifar10_binary_tar.path.as_uri(),
            "cifar-10-binary.tar.gz",
            md5_file(cifar10_binary_tar.path),
        )
        spec = dataclasses.replace(DATASETS["cifar10"], downloads=(remote,))
        monkeypatch.setitem(DATASETS, "cifar10", spec)
        result = runner.invoke(app, ["data", "download", "--dest", str(tmp_path / "dl")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "dl" / "cifar-10-binary.tar.gz").is_file()

    def test_download_without_destination_exits_2(self, runner) -> None:
        result = runner.invoke(app, ["data", "download"])
        assert result.exit_code == 2
        assert "--dest" in result.stderr
