"""The lambda tables committed in docs/results: each row agrees with its genotype and runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from rkdsc_core.models.genotypes import genotype_from_dict
from rkdsc_core.nas import StudentEvalConfig, row_slug, student_complexity

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"
TABLES = sorted(p.parent for p in RESULTS.glob("nas*/sweep.json"))


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_rows_match_their_genotypes_and_protocol_runs(table: Path) -> None:
    doc = json.loads((table / "sweep.json").read_text())
    shape = StudentEvalConfig(**doc["eval_config"])
    assert doc["rows"][0]["label"] == "plain-darts"
    for row in doc["rows"]:
        slug = row_slug(row["label"])
        genotype = json.loads((table / f"{slug}.json").read_text())
        assert genotype == row["genotype"], slug
        # The student the genotype builds has the parameters and MACs the table reports.
        built = student_complexity(genotype_from_dict(genotype), shape)
        assert (built["params"], built["macs"]) == (row["params"], row["macs"]), slug
        # The accuracy is the mean of the committed protocol runs, one per seed.
        runs = [
            json.loads((table / f"{slug}.eval-seed{seed}.json").read_text())
            for seed in row["eval_seeds"]
        ]
        assert all(r["genotype"] == genotype for r in runs), slug
        accuracies = [r["val_accuracy"] for r in runs]
        assert row["val_accuracies"] == accuracies, slug
        assert row["val_accuracy"] == pytest.approx(statistics.fmean(accuracies)), slug


def test_the_current_table_names_the_shipped_teacher() -> None:
    doc = json.loads((RESULTS / "nas" / "sweep.json").read_text())
    teacher = RESULTS.parents[1] / "rkdsc_core" / "weights" / "teacher" / "teacher.json"
    assert doc["teacher"]["weights_sha256"] == json.loads(teacher.read_text())["weights_sha256"]
    kd_lambdas = {r["lambda"] for r in doc["rows"] if r["use_kd"]}
    assert kd_lambdas >= {0.0, 0.1}  # the KD-only row and the pre-registered one
