"""The shipped teacher loads and reproduces its model card's accuracy on the test sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkdsc_core.checkpoint import load_model
from rkdsc_core.config import load_settings
from rkdsc_core.data import DataSourceError, load_dataset
from rkdsc_core.train.teacher import evaluate_teacher

SHIPPED = Path(__file__).resolve().parents[2] / "rkdsc_core" / "weights" / "teacher"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHIPPED / "teacher.json").is_file(), reason="no shipped teacher in this checkout"
)
def test_shipped_teacher_reproduces_its_model_card() -> None:
    measured = json.loads((SHIPPED / "teacher.json").read_text())["metrics"]["shipped"]
    data = load_settings().resolved_data()
    try:
        test = load_dataset("cifar10", "test", source=data.dir, cache_dir=data.cache_dir)
    except (DataSourceError, ValueError) as err:
        pytest.skip(f"CIFAR-10 is not available here: {err}")
    assert test.source_sha256 == measured["dataset_sha256"], "a different copy of CIFAR-10"
    model = load_model(SHIPPED / "teacher")
    got = evaluate_teacher(model, test, limit=measured["sample_images"], channels_last=True)
    assert abs(got["test_accuracy"] - measured["sample_accuracy"]) <= 0.005
    assert (SHIPPED / "MODEL_CARD.md").read_text().count(f"{measured['sample_accuracy']:.4f}") >= 1
