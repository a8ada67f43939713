"""bench/bench_data.py: one JSON report of cold decode, warm loads and a loader epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkdsc_core.data.specs import CIFAR10_CLASSES
from tests.core.data.conftest import TREE_COUNTS, write_tree
from tests.deploy._support import ROOT, import_path


def test_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path / "tree", CIFAR10_CLASSES)
    bench = import_path(ROOT / "bench" / "bench_data.py")
    args = [str(tmp_path / "tree"), "--cache-dir", str(tmp_path / "cache"), "--repeat", "2"]
    assert bench.main([*args, "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    images = TREE_COUNTS["train"] * len(CIFAR10_CLASSES)
    assert report["images"] == [images, 32, 32, 3] and report["epoch_images"] == images
    assert 0 < report["warm_load_min_s"] <= report["warm_load_median_s"]
    assert report["cold_decode_s"] > 0 and report["warm_load_under_2s"] is True
    assert report["machine"]["logical_cpus"] >= 1  # where it ran
    assert (tmp_path / "cache").is_dir()
