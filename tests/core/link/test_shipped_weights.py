"""The shipped default link loads and reproduces its model card on the real test split."""

import json
import os
from pathlib import Path

import pytest

from rkdsc_core.data import load_dataset
from rkdsc_core.link import default_weights_dir, load_link
from rkdsc_core.train.link import evaluate_clean_channel


def test_default_link_loads_with_its_eval_table() -> None:
    bundle = load_link()
    assert bundle.classes[0] == "airplane" and len(bundle.classes) == 10
    assert bundle.eval_table is not None
    assert set(bundle.eval_table.lengths("awgn")) == set(bundle.pipeline.lengths)
    assert (default_weights_dir() / "MODEL_CARD.md").is_file()


@pytest.mark.slow
def test_default_link_reproduces_its_recorded_accuracy(tmp_path: Path) -> None:
    source = os.environ.get("RKDSC_DATA_DIR")
    if not source:
        pytest.skip("RKDSC_DATA_DIR is not set: the CIFAR-10 test split is needed")
    meta = json.loads((default_weights_dir() / "link.json").read_text())
    recorded = meta["training"]["history"][-1]["acc_awgn_20db"]
    test = load_dataset("cifar10", "test", source=Path(source), cache_dir=tmp_path)
    assert test.source_sha256 == meta["dataset"]["sha256"]
    measured = evaluate_clean_channel(load_link().pipeline, test, limit=2000)
    assert abs(measured - recorded) <= 0.005, (measured, recorded)
