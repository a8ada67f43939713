"""`rkdsc eval clean`: a checkpoint's and a link student's clean test accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rkdsc_core.checkpoint import load_model, save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.data import load_dataset
from rkdsc_core.link import SemanticPipeline, load_link, save_link
from rkdsc_core.models import create_model
from rkdsc_core.train.teacher import evaluate_teacher
from tests.core.data.conftest import write_tree

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_scores_checkpoints_and_link_students_like_evaluate_teacher(tmp_path: Path) -> None:
    teacher = create_model("resnet18-cifar", width=8)
    save_checkpoint(tmp_path / "teacher", teacher, name="resnet18-cifar", config={"width": 8})
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    pipeline = SemanticPipeline(student, codec, num_pilots=4)  # type: ignore[arg-type]
    save_link(tmp_path / "link", pipeline, student_name="darts-student", classes=CLASSES)
    tree = write_tree(tmp_path / "tree").path  # 9 train, 6 test images
    data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
    args = ["eval", "clean", str(tmp_path / "teacher"), str(tmp_path / "link"), "--json"]
    result = CliRunner().invoke(app, [*args, *data])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["kind"] for r in rows] == ["checkpoint", "link student"]
    assert all(r["images"] == 6 for r in rows)
    test = load_dataset("cifar10", "test", source=tree, cache_dir=tmp_path / "dc")
    models = (load_model(tmp_path / "teacher"), load_link(tmp_path / "link").pipeline.student)
    for row, model in zip(rows, models, strict=True):
        want = evaluate_teacher(model, test)
        assert row["accuracy_single_view"] == want["test_accuracy_single_view"]
        assert row["accuracy_flip_tta"] == want["test_accuracy"]
    text = CliRunner().invoke(app, ["eval", "clean", str(tmp_path / "link"), "--limit", "4", *data])
    assert text.exit_code == 0, text.output
    assert "4 images" in text.output and "(link student)" in text.output
    result = CliRunner().invoke(app, [*args, "--translate-tta", *data])
    assert result.exit_code == 0, result.output
    for row, model in zip(json.loads(result.stdout), models, strict=True):
        six = evaluate_teacher(model, test, translate_tta=True)
        assert row["accuracy_shift_tta"] == six["test_accuracy"]
        assert row["accuracy_flip_tta"] == six["test_accuracy_flip_tta"]
        assert six["test_accuracy_flip_tta"] == evaluate_teacher(model, test)["test_accuracy"]
    text = CliRunner().invoke(app, [*args[:-1], "--translate-tta", *data])
    assert text.exit_code == 0 and "6 views" in text.output, text.output


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree").path
    data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
    result = CliRunner().invoke(app, ["eval", "clean", str(tmp_path / "nope"), *data])
    assert result.exit_code == 2
    assert "cannot load" in result.output and "nope" in result.output
