"""Tests of the lambda table: rows, the evaluation protocol, the written table."""

from __future__ import annotations

import dataclasses
import importlib
import json
import statistics
from pathlib import Path

import pytest

from rkdsc_core.data import ImageDataset
from rkdsc_core.models.genotypes import DARTS_V2
from rkdsc_core.nas import (
    StudentEvalConfig,
    evaluate_genotype,
    sweep,
    sweep_rows,
    train_student_plain,
    write_table,
)
from rkdsc_core.nas import evaluate as evaluate_module
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
        assert result["wall_seconds"] > 0


class _CountingProtocol:
    """Wraps the real protocol and counts the runs (patched into the evaluate module)."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, genotype, train, val, cfg, **kwargs):  # type: ignore[no-untyped-def]
        self.seeds.append(cfg.seed)
        return train_student_plain(genotype, train, val, cfg, **kwargs)


@pytest.fixture
def protocol(monkeypatch: pytest.MonkeyPatch) -> _CountingProtocol:
    counting = _CountingProtocol()
    monkeypatch.setattr(evaluate_module, "train_student_plain", counting)
    return counting


class TestEvaluateGenotype:
    def test_writes_the_seed_file_and_reuses_it(
        self, search_data: ImageDataset, tmp_path: Path, protocol: _CountingProtocol
    ) -> None:
        first = evaluate_genotype(DARTS_V2, search_data, search_data, EVAL, tmp_path, max_steps=2)
        doc = json.loads((tmp_path / "eval-seed0.json").read_text())
        assert doc["val_accuracy"] == first["val_accuracy"] and doc["eval_config"]["C"] == 4
        again = evaluate_genotype(DARTS_V2, search_data, search_data, EVAL, tmp_path, max_steps=2)
        assert again == first and protocol.seeds == [0]

    def test_other_settings_rerun_the_protocol(
        self, search_data: ImageDataset, tmp_path: Path, protocol: _CountingProtocol
    ) -> None:
        evaluate_genotype(DARTS_V2, search_data, search_data, EVAL, tmp_path, max_steps=2)
        wider = dataclasses.replace(EVAL, C=6)
        result = evaluate_genotype(DARTS_V2, search_data, search_data, wider, tmp_path, max_steps=2)
        assert protocol.seeds == [0, 0]
        doc = json.loads((tmp_path / "eval-seed0.json").read_text())
        assert doc["eval_config"]["C"] == 6 and doc["params"] == result["params"]


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
        assert "teacher" not in doc and "distil from" not in table  # no KD rows
        genotype = json.loads((tmp_path / "darts+cost_lambda-5" / "genotype.json").read_text())
        assert genotype == doc["rows"][1]["genotype"]
        again = sweep(cfg, [5.0], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert [r["params"] for r in again] == [r["params"] for r in rows]

    def test_a_row_of_other_data_or_a_cut_short_search_is_redone(
        self, search_data: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sweep_module = importlib.import_module("rkdsc_core.nas.sweep")  # `sweep` is the function
        searched: list[str] = []
        real = sweep_module.search

        def counting(cfg, data, *a, **k):  # type: ignore[no-untyped-def]
            searched.append(data.source_sha256[:1])
            return real(cfg, data, *a, **k)

        monkeypatch.setattr(sweep_module, "search", counting)
        cfg = dataclasses.replace(TINY, epochs=1)
        sweep(cfg, [], search_data, search_data, None, tmp_path, eval_cfg=EVAL, max_steps=1)
        sweep(cfg, [], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert searched == ["0", "0"]  # the first stopped after one step: not reused
        sweep(cfg, [], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert searched == ["0", "0"]  # the same inputs, a finished row: reused
        elsewhere = dataclasses.replace(search_data, split="val")
        (row,) = sweep(cfg, [], search_data, elsewhere, None, tmp_path, eval_cfg=EVAL)
        assert searched == ["0", "0", "0"]  # not reused: scored anew (its search resumes done)
        assert row["eval_data"].startswith(f"{search_data.name}/val/")
        other = dataclasses.replace(search_data, source_sha256="1" * 64)
        sweep(cfg, [], other, search_data, None, tmp_path / "o", eval_cfg=EVAL)
        (row,) = sweep(cfg, [], other, search_data, None, tmp_path / "o", eval_cfg=EVAL)
        assert searched == ["0", "0", "0", "1"]
        assert row["inputs"]["data"]["source_sha256"] == "1" * 64
        assert row["inputs"]["teacher"] is None  # no KD row, no teacher
        # Into the first folder: its row is not reused, and its search does not resume.
        with pytest.raises(ValueError, match="another config"):
            sweep(cfg, [], other, search_data, None, tmp_path, eval_cfg=EVAL)

    def test_several_protocol_seeds_give_mean_and_spread(
        self, search_data: ImageDataset, tmp_path: Path, protocol: _CountingProtocol
    ) -> None:
        cfg = dataclasses.replace(TINY, epochs=1)
        rows = sweep(cfg, [], search_data, search_data, None, tmp_path, eval_cfg=EVAL)
        assert protocol.seeds == [0]
        rows = sweep(cfg, [], search_data, search_data, None, tmp_path, eval_cfg=EVAL, eval_seeds=3)
        assert protocol.seeds == [0, 1, 2]  # seed 0 came from its file
        (row,) = rows
        assert row["eval_seeds"] == [0, 1, 2] and len(row["val_accuracies"]) == 3
        assert row["val_accuracy"] == pytest.approx(statistics.fmean(row["val_accuracies"]))
        assert row["val_accuracy_std"] == pytest.approx(statistics.stdev(row["val_accuracies"]))
        assert "(3 seeds)" in (tmp_path / "sweep.md").read_text()

    def test_the_table_names_the_kd_rows_teacher(self, tmp_path: Path) -> None:
        row = {"label": "kdl-darts lambda=0.1", "lambda": 0.1, "use_kd": True, "params": 1}
        row |= {"macs": 1, "val_accuracy": 0.5, "eval_images": 16, "expected_cost": 0.3}
        teacher = {"cache": "runs/tc", "model": "fastnet-cifar", "path": "weights/teacher"}
        teacher |= {"weights_sha256": "ab" * 32, "metrics": {"test_accuracy": 0.9095}}
        write_table([row], tmp_path, eval_cfg=EVAL, eval_split="cifar10/test", teacher=teacher)
        assert json.loads((tmp_path / "sweep.json").read_text())["teacher"] == teacher
        table = (tmp_path / "sweep.md").read_text()
        assert "`fastnet-cifar` (`weights/teacher`, weights sha256 abababababab" in table
        assert "accuracy 0.9095), through the cache `runs/tc`" in table

    @pytest.mark.parametrize(
        ("lambdas", "message"),
        [([float("nan")], "finite"), ([float("inf")], "finite"), ([0.1, 0.1000001], "collide")],
    )
    def test_lambdas_that_cannot_label_a_row_are_refused(
        self, lambdas: list[float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            sweep_rows(TINY, lambdas, with_teacher=True)

    def test_no_protocol_seed_is_refused(self, search_data: ImageDataset, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="eval_seeds"):
            sweep(TINY, [], search_data, search_data, None, tmp_path, eval_seeds=0)
