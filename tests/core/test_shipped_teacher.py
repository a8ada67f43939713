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


ROOT = WEIGHTS.parents[1]


def test_readme_teacher_rows_match_their_manifests() -> None:
    """Every README teacher row that links a run manifest repeats that manifest's figures."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The teacher", 1)[1].split("\n### ", 1)[0]
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("|") and "(docs/results/teacher/" in line
    ]
    assert len(rows) >= 4
    for row in rows:
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        path = cells[-1].split("(", 1)[1].rstrip(")")
        manifest = json.loads((ROOT / path).read_text())
        m = manifest["metrics"]
        assert cells[1] == f"{manifest['parameters']:,}", row
        if manifest["model"] == "ensemble":  # epochs and time are its members'
            members = [x["metrics"] for x in manifest["extra"]["members"]]
            assert cells[2] == "(" + " + ".join(str(x["epochs"]) for x in members) + ")", row
            hours = sum(x["wall_seconds"] for x in members) / 3600
            assert cells[3] == f"{hours:.2f} h (the members')", row
        else:
            assert cells[2] == str(m["epochs"]), row
            assert cells[3] == f"{m['wall_seconds'] / 3600:.2f} h", row
        assert cells[4] == f"{100 * m['test_accuracy']:.2f}%", row
