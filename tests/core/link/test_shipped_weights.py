"""Every shipped link loads and reproduces its model card on the real test split.

``default`` is the RKD link the demo and the services load; ``stage1-only`` and
``ce-only`` are its baselines from the same recipe (see ``make weights``).
"""

import json
import os
from pathlib import Path

import pytest

from rkdsc_core.data import load_dataset
from rkdsc_core.link import default_weights_dir, load_link
from rkdsc_core.train.link import evaluate_clean_channel

SHIPPED = ("default", "stage1-only", "ce-only")


def _folder(name: str) -> Path:
    return default_weights_dir().parent / name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_link_loads_with_its_eval_table_and_card(name: str) -> None:
    bundle = load_link(_folder(name))
    assert bundle.classes[0] == "airplane" and len(bundle.classes) == 10
    assert bundle.eval_table is not None
    assert set(bundle.eval_table.lengths("awgn")) == set(bundle.pipeline.lengths)
    assert (_folder(name) / "MODEL_CARD.md").is_file()


def test_default_is_the_rkd_link() -> None:
    meta = load_link().meta
    assert meta["recipe"].startswith("RKD stage 2")
    assert meta["student_source"]["extra"]["training"]["stage"].startswith("rkd-1")


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_link_reproduces_its_recorded_accuracy(name: str, tmp_path: Path) -> None:
    source = os.environ.get("RKDSC_DATA_DIR")
    if not source:
        pytest.skip("RKDSC_DATA_DIR is not set: the CIFAR-10 test split is needed")
    meta = json.loads((_folder(name) / "link.json").read_text())
    recorded = meta["training"]["history"][-1]["acc_awgn_20db"]
    test = load_dataset("cifar10", "test", source=Path(source), cache_dir=tmp_path)
    assert test.source_sha256 == meta["dataset"]["sha256"]
    measured = evaluate_clean_channel(load_link(_folder(name)).pipeline, test, limit=2000)
    assert abs(measured - recorded) <= 0.005, (measured, recorded)


@pytest.mark.parametrize("name", ("default", "stage1-only"))
def test_distilled_links_name_the_shipped_teacher(name: str) -> None:
    """Their cards tie the recorded teacher to ``weights/teacher`` by its sha256."""
    card = (_folder(name) / "MODEL_CARD.md").read_text()
    assert "the same weights as the shipped teacher, `rkdsc_core/weights/teacher`" in card
