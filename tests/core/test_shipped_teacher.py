"""Each shipped teacher loads and reproduces its model card's accuracy on the test sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkdsc_core.checkpoint import load_model
from rkdsc_core.config import load_settings
from rkdsc_core.data import DataSourceError, load_dataset
from rkdsc_core.train.teacher import evaluate_teacher

WEIGHTS = Path(__file__).resolve().parents[2] / "rkdsc_core" / "weights"
TEACHERS = sorted(p.parent for p in WEIGHTS.glob("teacher*/teacher.json"))


@pytest.mark.slow
@pytest.mark.skipif(not TEACHERS, reason="no shipped teacher in this checkout")
@pytest.mark.parametrize("shipped", TEACHERS, ids=[p.name for p in TEACHERS])
def test_shipped_teacher_reproduces_its_model_card(shipped: Path) -> None:
    measured = json.loads((shipped / "teacher.json").read_text())["metrics"]["shipped"]
    data = load_settings().resolved_data()
    try:
        test = load_dataset("cifar10", "test", source=data.dir, cache_dir=data.cache_dir)
    except (DataSourceError, ValueError) as err:
        pytest.skip(f"CIFAR-10 is not available here: {err}")
    assert test.source_sha256 == measured["dataset_sha256"], "a different copy of CIFAR-10"
    model = load_model(shipped / "teacher")
    got = evaluate_teacher(model, test, limit=measured["sample_images"], channels_last=True)
    assert abs(got["test_accuracy"] - measured["sample_accuracy"]) <= 0.005
    assert (shipped / "MODEL_CARD.md").read_text().count(f"{measured['sample_accuracy']:.4f}") >= 1
