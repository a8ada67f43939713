"""scripts/ship_teacher.py: fp16 weights that keep the manifest, and a card from the numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from rkdsc_core.checkpoint import load_checkpoint, load_model, save_checkpoint
from rkdsc_core.models import create_model
from tests.deploy._support import ROOT, import_path

ship_teacher = import_path(ROOT / "scripts" / "ship_teacher.py")

_HISTORY = [
    {"epoch": 1, "train_loss": 1.5, "train_accuracy": 0.5, "test_accuracy": 0.61, "seconds": 9.0},
    {"epoch": 2, "train_loss": 1.1, "train_accuracy": 0.7, "test_accuracy": 0.93, "seconds": 8.0},
]


def test_ships_fp16_weights_with_the_manifest_and_a_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_model("fastnet-cifar", widths=(4, 8, 8))
    model.init_whitening(torch.rand(4, 3, 32, 32))
    model.eval()
    recipe = {"model": "fastnet-cifar", "epochs": 2, "batch_size": 1024}
    save_checkpoint(
        tmp_path / "run" / "teacher",
        model,
        name="fastnet-cifar",
        config=model.config,
        dataset={"name": "cifar10", "sha256": "ab" * 32},
        metrics={"test_accuracy": 0.93, "test_accuracy_single_view": 0.92, "epochs": 2,
                 "wall_seconds": 17.0, "test_images": 10000, "history": _HISTORY},
        extra={"training": {"config": recipe, "world_size": 1}},
        command="rkdsc train teacher --out run",
    )  # fmt: skip
    measured: dict[str, Any] = {
        "test_images": 10000,
        "test_accuracy": 0.9301,
        "test_accuracy_single_view": 0.9188,
        "sample_images": 2000,
        "sample_accuracy": 0.9315,
        "dataset_sha256": "ab" * 32,
        "eval_seconds": 1.0,
    }
    monkeypatch.setattr(ship_teacher, "measure", lambda model, name: measured)
    dest = tmp_path / "weights" / "teacher"
    argv = ["ship_teacher.py", str(tmp_path / "run" / "teacher"), str(dest), "--machine", "m"]
    monkeypatch.setattr(sys, "argv", argv)
    ship_teacher.main()

    _, doc = load_checkpoint(dest / "teacher")
    assert doc["metrics"]["shipped"] == measured
    assert doc["extra"]["training"]["config"] == recipe
    assert doc["command"] == "rkdsc train teacher --out run"
    tensors = json.loads((dest / "teacher.json").read_text())
    assert tensors["model"] == "fastnet-cifar"
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(load_model(dest / "teacher")(x), model(x), atol=2e-2, rtol=2e-2)
    card = (dest / "MODEL_CARD.md").read_text()
    assert "`fastnet-cifar`" in card.splitlines()[0]
    assert json.dumps(recipe, sort_keys=True) in card
    assert "**met** (93.01% with flip TTA)" in card
    assert "| 2 | 1.100 | 0.7000 | 0.9300 | 8 |" in card
    assert "0.9315" in card


@pytest.mark.parametrize("translate_tta", [False, True])
def test_a_six_view_training_score_is_labelled_so(translate_tta: bool) -> None:
    model = create_model("fastnet-cifar", widths=(4, 8, 8))
    metrics = {"test_accuracy": 0.93, "test_accuracy_single_view": 0.92, "epochs": 2,
               "wall_seconds": 17.0, "test_images": 10000, "history": _HISTORY,
               "translate_tta": translate_tta}  # fmt: skip
    manifest = {"model": "fastnet-cifar", "metrics": metrics, "parameters": 1}
    shipped = {"test_images": 10000, "test_accuracy": 0.92, "test_accuracy_single_view": 0.91,
               "sample_accuracy": 0.92}  # fmt: skip
    card = ship_teacher.card(manifest, shipped, "m", model)
    row = next(line for line in card.splitlines() if line.startswith("| float32"))
    assert ("6 views" in row) is translate_tta, row
