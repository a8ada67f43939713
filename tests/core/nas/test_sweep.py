"""Tests of the lambda table: rows, the evaluation protocol, the written table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rkdsc_core.data import ImageDataset
from rkdsc_core.models.genotypes import DARTS_V2
from rkdsc_core.nas import StudentEvalConfig, sweep, sweep_rows, train_student_plain
from tests.core.nas.conftest import TINY

EVAL = StudentEvalConfig(C=4, layers=2, token_dim=8, epochs=1, batch_size=8, eval_images=16)


class TestSweepRows:
    def test_plain_darts_first_then_one_row_per_lambda(self) -> None:
        rows = sweep_rows(TINY, [0, 0.5], with_teacher=True)
        assert [label for label, _ in rows] == [
            "plain-darts",
            "kdl-darts lambda=0",
            "kdl-darts lambda=0.5",
        ]
        plain = rows[0][1]
        assert (plain.use_kd, plain.lam) == (False, 0.0)
        assert all(c.use_kd for _, c in rows[1:])

    def test_without_teacher_lambda_zero_is_the_plain_row(self) -> None:
        rows = sweep_rows(TINY, [0, 1], with_teacher=False)
        assert [label for label, _ in rows] == ["plain-darts", "darts+cost lambda=1"]

    def test_negative_lambda_is_refused(self) -> None:
        with pytest.raises(ValueError, match=">= 0"):
            sweep_rows(TINY, [-1], with_teacher=False)


class TestEvaluationProtocol:
    def test_reports_params_macs_and_accuracy(self, search_data: ImageDataset) -> None:
        result = train_student_plain(DARTS_V2, search_data, search_data, EVAL, max_steps=2)
        assert result["params"] > 0 and result["macs"] > 0
        assert 0.0 <= result["val_accuracy"] <= 1.0 and result["eval_images"] == 16


class TestSweep:
    def test_writes_json_and_markdown_and_reuses_done_rows(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(TINY, epochs=1)
        rows = sweep(cfg, [5.0], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert [r["label"] for r in rows] == ["plain-darts", "darts+cost lambda=5"]
        doc = json.loads((tmp_path / "sweep.json").read_text())
        assert [r["lambda"] for r in doc["rows"]] == [0.0, 5.0]
        assert {"params", "macs", "val_accuracy", "genotype"} <= set(doc["rows"][1])
        table = (tmp_path / "sweep.md").read_text()
        assert "| plain-darts | 0 | no |" in table and "darts+cost lambda=5" in table
        again = sweep(cfg, [5.0], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert [r["params"] for r in again] == [r["params"] for r in rows]
