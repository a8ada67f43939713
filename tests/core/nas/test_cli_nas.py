"""`rkdsc nas search` / `rkdsc nas sweep` end to end on a tiny synthetic image folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rkdsc_core.checkpoint import save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.data import load_dataset
from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.distill import build_teacher_cache
from rkdsc_core.registry import create_model

TINY_FLAGS = ["--epochs", "1", "--subset", "16", "--C", "4", "--layers", "3"]
TINY_FLAGS += ["--batch-size", "8", "--input-size", "16"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR", "RKDSC_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """CIFAR-10-shaped image folder: 2 train and 1 test image per class (32x32 PNG)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for split, count in (("train", 2), ("test", 1)):
        for name in CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def _data_flags(tree: Path, tmp_path: Path) -> list[str]:
    return ["--data", str(tree), "--cache-dir", str(tmp_path / "cache")]


class TestNasCli:
    def test_search_without_teacher_says_kd_is_off(
        self, runner: CliRunner, tree: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "run"
        args = ["nas", "search", "--out", str(out), "--lambda", "0.5", *TINY_FLAGS]
        result = runner.invoke(app, [*args, *_data_flags(tree, tmp_path)])
        assert result.exit_code == 0, result.output
        assert "KD terms are off" in result.output
        genotype = json.loads((out / "genotype.json").read_text())
        manifest = json.loads((out / "search.json").read_text())
        assert manifest["genotype"] == genotype
        assert manifest["config"]["use_kd"] is False and manifest["config"]["lam"] == 0.5
        assert manifest["teacher_cache"] is None and len(manifest["history"]) == 1
        assert manifest["derived_student"]["params"] > 0

    def test_search_with_teacher_cache_distils(
        self, runner: CliRunner, tree: Path, tmp_path: Path
    ) -> None:
        train = load_dataset("cifar10", "train", source=tree, cache_dir=tmp_path / "cache")
        teacher = create_model("resnet18-cifar", width=4)
        save_checkpoint(tmp_path / "teacher", teacher, name="resnet18-cifar")
        build_teacher_cache(tmp_path / "teacher", train, tmp_path / "tcache", views=1)
        out = tmp_path / "run"
        args = ["nas", "search", "--out", str(out), "--teacher-cache", str(tmp_path / "tcache")]
        result = runner.invoke(app, [*args, *TINY_FLAGS, *_data_flags(tree, tmp_path)])
        assert result.exit_code == 0, result.output
        assert "distilling from" in result.output
        manifest = json.loads((out / "search.json").read_text())
        assert manifest["config"]["use_kd"] is True
        cache = json.loads((tmp_path / "tcache.json").read_text())
        assert manifest["teacher"] == {"cache": str(tmp_path / "tcache")} | cache["teacher"]
        assert manifest["history"][0]["train_kd"] > 0
        assert "train_feature" in manifest["history"][0]

    def test_sweep_writes_the_lambda_table(
        self, runner: CliRunner, tree: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "sweep"
        args = ["nas", "sweep", "--out", str(out), "--lambdas", "1", *TINY_FLAGS]
        args += ["--eval-epochs", "1", "--eval-C", "4", "--eval-layers", "2", "--eval-limit", "8"]
        args += ["--eval-batch-size", "8"]
        result = runner.invoke(app, [*args, *_data_flags(tree, tmp_path)])
        assert result.exit_code == 0, result.output
        assert "| plain-darts |" in result.output
        rows = json.loads((out / "sweep.json").read_text())["rows"]
        assert [r["label"] for r in rows] == ["plain-darts", "darts+cost lambda=1"]
        assert (out / "sweep.md").is_file()

    def test_evaluate_adds_a_seed_the_sweep_then_reuses(
        self, runner: CliRunner, tree: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "sweep"
        evals = ["--eval-epochs", "1", "--eval-C", "4", "--eval-layers", "2"]
        evals += ["--eval-limit", "8", "--eval-batch-size", "8"]
        args = ["nas", "sweep", "--out", str(out), "--lambdas", "1", *TINY_FLAGS, *evals]
        assert runner.invoke(app, [*args, *_data_flags(tree, tmp_path)]).exit_code == 0
        row_dir = out / "plain-darts"
        args = ["nas", "evaluate", "--genotype", str(row_dir / "row.json"), "--out", str(row_dir)]
        result = runner.invoke(app, [*args, "--seed", "1", *evals, *_data_flags(tree, tmp_path)])
        assert result.exit_code == 0, result.output
        added = json.loads((row_dir / "eval-seed1.json").read_text())
        assert f"accuracy {added['val_accuracy']:.4f} on 8 test images" in result.output
        args = ["nas", "sweep", "--out", str(out), "--lambdas", "1", *TINY_FLAGS, *evals]
        args += ["--eval-seeds", "2"]
        result = runner.invoke(app, [*args, *_data_flags(tree, tmp_path)])
        assert result.exit_code == 0, result.output
        plain = json.loads((out / "sweep.json").read_text())["rows"][0]
        assert plain["eval_seeds"] == [0, 1]
        assert plain["val_accuracies"][1] == added["val_accuracy"]
        assert "(2 seeds)" in result.output

    def test_evaluate_refuses_an_unknown_genotype(self, runner: CliRunner, tmp_path: Path) -> None:
        args = ["nas", "evaluate", "--genotype", "no_such_cell", "--out", str(tmp_path)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "unknown genotype 'no_such_cell'" in result.stderr

    def test_bad_lambdas_exit_2(self, runner: CliRunner, tmp_path: Path) -> None:
        result = runner.invoke(app, ["nas", "sweep", "--out", str(tmp_path), "--lambdas", "a,b"])
        assert result.exit_code == 2
        assert "comma-separated" in result.stderr
