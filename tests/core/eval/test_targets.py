"""The paper's targets are read off the sweep rows and the lambda table, and can fail."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rkdsc_core.checkpoint import save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.eval import SweepRow, TargetCheck, check_targets, format_targets
from rkdsc_core.link import SemanticPipeline, save_link
from rkdsc_core.models import count_parameters, create_model
from tests.core.conftest import CLASSES

SNRS = (-10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 20.0)
"""The sweep's grid up to 5 dB (every point of it is needed), and 20 dB."""


def _rows(
    system: str,
    acc: dict[float, float],
    channels: tuple[str, ...] = ("awgn", "rayleigh"),
    length: int = 64,
) -> list[SweepRow]:
    return [
        SweepRow(system, ch, "pilot", length, snr, acc[snr], length, 100, 0)
        for ch in channels
        for snr in SNRS
    ]


GOOD = {-10.0: 0.6, -8.0: 0.7, -6.0: 0.75, -4.0: 0.80, -2.0: 0.83, 0.0: 0.86, 2.0: 0.87, 4.0: 0.88}
GOOD[20.0] = 0.90
WORSE = {snr: acc - 0.2 for snr, acc in GOOD.items() if snr <= 5} | {0.0: 0.60, 20.0: 0.89}
NAS = [
    {
        "label": "plain-darts",
        "lambda": 0.0,
        "use_kd": False,
        "params": 200_000,
        "val_accuracy": 0.80,
    },
    {"label": "kdl", "lambda": 0.1, "use_kd": True, "params": 120_000, "val_accuracy": 0.795},
]


def _by_name(checks: list[TargetCheck]) -> dict[str, TargetCheck]:
    return {c.name.split(" (")[0].split(",")[0]: c for c in checks}


def test_all_targets_met() -> None:
    rows = _rows("rkd", GOOD) + _rows("stage1-only", WORSE) + _rows("ce-only", WORSE)
    checks = check_targets(
        rows,
        teacher_accuracy=0.92,
        teacher_params=2_800_000,
        encoder_params=250_000,
        nas_rows=NAS,
        teacher_test_accuracy=0.925,
    )
    assert [c.met for c in checks] == [True] * len(checks), format_targets(checks)
    by = _by_name(checks)
    assert by["teacher's clean test accuracy"].value == 0.925
    assert by["AWGN 20 dB"].value == 0.90 / 0.92
    # The ratio against the teacher's flip-TTA figure is shown beside it, with its verdict.
    assert by["AWGN 20 dB"].detail == (
        "0.9000 / 0.9200 (with the teacher's flip TTA 0.9250: 0.9730)"
    )
    points = by["KDL-DARTS accuracy vs plain DARTS [points]"].value
    assert points is not None and abs(points + 0.5) < 1e-9


def test_each_target_can_fail() -> None:
    low = {**GOOD, 0.0: 0.65, 20.0: 0.80}
    # The CE-only student beats RKD at 4 dB on Rayleigh only.
    ce = _rows("ce-only", WORSE, channels=("awgn",)) + [
        SweepRow("ce-only", "rayleigh", "pilot", 64, snr, 0.95 if snr == 4.0 else 0.1, 64, 100, 0)
        for snr in SNRS
    ]
    rows = _rows("rkd", low) + _rows("stage1-only", WORSE) + ce
    nas = [NAS[0], {**NAS[1], "params": 180_000, "val_accuracy": 0.78}]
    checks = check_targets(
        rows,
        teacher_accuracy=0.92,
        teacher_params=2_000_000,
        encoder_params=250_000,
        nas_rows=nas,
        teacher_test_accuracy=0.9199,
    )
    met = {c.name: c.met for c in checks}
    assert list(met.values()) == [False, False, False, False, True, False, False, False], met

    # A sweep without every grid point up to 5 dB cannot say "every SNR".
    sparse = [r for r in _rows("rkd", GOOD) + _rows("stage1-only", WORSE) + _rows("ce-only", WORSE)
              if r.snr_db in (0.0, 20.0)]  # fmt: skip
    kw: dict[str, Any] = {"teacher_accuracy": 0.92, "teacher_params": 10**6, "encoder_params": 1}
    beats = [c for c in check_targets(sparse, **kw) if c.name.startswith("beats")]
    assert len(beats) == 2
    assert all(c.met is None and "missing rkd@-10 dB" in c.detail for c in beats)
    rayleigh = next(c for c in checks if c.name.endswith("rayleigh"))
    assert "ce-only at 4 dB, L=64" in rayleigh.detail


def _with_records(rows: list[SweepRow]) -> list[SweepRow]:
    """Rows whose per-image record puts each system's right answers on the first images."""
    out = []
    for r in rows:
        hits = round(r.accuracy * r.images)
        mask = np.arange(r.images) < hits
        packed = np.packbits(mask.astype(np.uint8)).tobytes().hex()
        out.append(dataclasses.replace(r, accuracy=hits / r.images, correct=packed))
    return out


def test_paired_evidence_when_the_rows_carry_per_image_records() -> None:
    rows = _rows("rkd", GOOD) + _rows("stage1-only", WORSE) + _rows("ce-only", WORSE)
    kw: dict[str, Any] = {"teacher_accuracy": 0.92, "teacher_params": 10**6, "encoder_params": 1}
    plain = [c for c in check_targets(rows, **kw) if c.name.startswith("beats")]
    assert all("McNemar" not in c.detail for c in plain)
    # 100 images, margins of 20 to 26 points, every discordant image RKD's: all significant.
    paired = [c for c in check_targets(_with_records(rows), **kw) if c.name.startswith("beats")]
    for c in paired:
        for base in ("stage1-only", "ce-only"):
            assert f"vs {base} better at 8, worse at 0 of 8 SNRs" in c.detail, c.detail
    # Stage-1-only 2 points behind at -4 dB, right on other images (RKD alone on 22, it
    # alone on 20): not significant.
    close = _with_records(_rows("stage1-only", {**WORSE, -4.0: 0.78}))
    other = np.packbits((np.arange(100) >= 22).astype(np.uint8)).tobytes().hex()
    close = [dataclasses.replace(r, correct=other) if r.snr_db == -4.0 else r for r in close]
    rows = _with_records(_rows("rkd", GOOD) + _rows("ce-only", WORSE)) + close
    for c in [c for c in check_targets(rows, **kw) if c.name.startswith("beats")]:
        assert "vs stage1-only better at 7, worse at 0 of 8 SNRs" in c.detail, c.detail


def test_paired_evidence_is_per_baseline_and_never_stops_the_check() -> None:
    kw: dict[str, Any] = {"teacher_accuracy": 0.92, "teacher_params": 10**6, "encoder_params": 1}
    rkd = _with_records(_rows("rkd", GOOD))
    stage1 = _with_records(_rows("stage1-only", WORSE))
    # CE-only without records: its evidence is left out, stage-1-only's still shown.
    checks = [c for c in check_targets(rkd + stage1 + _rows("ce-only", WORSE), **kw)]
    beats = [c for c in checks if c.name.startswith("beats")]
    for c in beats:
        assert "vs stage1-only better at 8" in c.detail and "vs ce-only better" not in c.detail
    # A record that is not its row's: no evidence for that baseline, the targets still checked.
    bad = [dataclasses.replace(r, correct="ff") for r in _rows("ce-only", WORSE)]
    beats = [c for c in check_targets(rkd + stage1 + bad, **kw) if c.name.startswith("beats")]
    assert all(c.met for c in beats) and all("vs ce-only better" not in c.detail for c in beats)


def test_baselines_are_read_at_the_rkd_links_length() -> None:
    # A baseline swept only at L = 32 is not compared with RKD at L = 64.
    rows = _rows("rkd", GOOD) + _rows("stage1-only", WORSE) + _rows("ce-only", WORSE, length=32)
    checks = check_targets(rows, teacher_accuracy=0.92, teacher_params=10**6, encoder_params=1)
    beats = [c for c in checks if c.name.startswith("beats")]
    assert [c.met for c in beats] == [None, None]
    assert "ce-only@-4 dB, L=64" in beats[0].detail


def test_bad_teacher_figures_and_a_dead_link() -> None:
    rows = _rows("rkd", {**GOOD, 20.0: 0.0})
    for accuracy, params in ((0.0, 10), (1.5, 10), (0.9, 0)):
        with pytest.raises(ValueError, match="teacher accuracy"):
            check_targets(rows, teacher_accuracy=accuracy, teacher_params=params, encoder_params=1)
    checks = check_targets(rows, teacher_accuracy=0.9, teacher_params=10, encoder_params=1)
    assert _by_name(checks)["AWGN 0 dB vs 20 dB"].met is False


def test_missing_inputs_are_not_measured_never_met() -> None:
    checks = check_targets(
        _rows("rkd", GOOD, channels=("awgn",)),
        teacher_accuracy=0.9,
        teacher_params=1_000_000,
        encoder_params=10,
    )
    unmeasured = [c for c in checks if c.met is None]
    assert unmeasured[0].name.startswith("teacher's clean test accuracy")  # none given
    assert {c.name.split(",")[-1].strip() for c in unmeasured if "beats" in c.name} == {
        "awgn",
        "rayleigh",
    }
    assert sum("KDL-DARTS" in c.name for c in unmeasured) == 2
    assert "not measured" in format_targets(checks)


def test_cli_reads_the_results_from_disk(tmp_path: Path) -> None:
    rows = _rows("rkd", GOOD) + _rows("stage1-only", WORSE) + _rows("ce-only", WORSE)
    (tmp_path / "sweep").mkdir()
    doc = {"meta": {}, "rows": [dataclasses.asdict(r) for r in rows]}
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(doc))
    teacher = create_model("resnet18-cifar", width=8)
    # The links are scored on one view: the teacher's single-view accuracy is the reference.
    metrics = {"flip_tta": True, "test_accuracy": 0.95, "test_accuracy_single_view": 0.92}
    save_checkpoint(tmp_path / "teacher", teacher, name="resnet18-cifar", metrics=metrics)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    pipeline = SemanticPipeline(student, codec, num_pilots=4)  # type: ignore[arg-type]
    save_link(tmp_path / "link", pipeline, student_name="darts-student", classes=CLASSES)
    args = ["eval", "targets", "--sweep", str(tmp_path / "sweep"), "--teacher"]
    args += [str(tmp_path / "teacher"), "--link", str(tmp_path / "link"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert (got[0]["name"], got[0]["value"], got[0]["met"]) == (
        "teacher's clean test accuracy (flip TTA)",
        0.95,
        True,
    )
    size = got[1]
    encoder = count_parameters(student) + count_parameters(codec.encoder)  # type: ignore[arg-type]
    assert size["value"] == encoder / count_parameters(teacher)
    assert got[2]["detail"] == (
        "0.9000 / 0.9200 (with the teacher's flip TTA 0.9500: 0.9474, below 0.95)"
    )
    assert [c["met"] for c in got[2:6]] == [True, True, True, True]
    assert [c["met"] for c in got[6:]] == [None, None]  # no lambda table given
    # Only the teacher's manifest is read: a teacher whose weights are not at hand will do.
    (tmp_path / "teacher.safetensors").unlink()
    at = args.index("--teacher") + 1
    manifest_only = [*args[:at], str(tmp_path / "teacher.json"), *args[at + 1 :]]
    assert CliRunner().invoke(app, manifest_only).stdout == result.stdout
    # Two lambda tables (search seeds 0 and 1) are pooled; a table twice is refused.
    searched = _two_searches()
    for seed in (0, 1):
        (tmp_path / f"nas{seed}").mkdir()
        table = {"rows": searched[2 * seed : 2 * seed + 2]}
        (tmp_path / f"nas{seed}" / "sweep.json").write_text(json.dumps(table))
    pooled = CliRunner().invoke(
        app, [*args, "--nas", str(tmp_path / "nas0"), "--nas", str(tmp_path / "nas1")]
    )
    assert pooled.exit_code == 0, pooled.output
    assert json.loads(pooled.output)[6]["value"] == pytest.approx(140_000 / 210_000)
    twice = CliRunner().invoke(
        app, [*args, "--nas", str(tmp_path / "nas1"), "--nas", str(tmp_path / "nas1")]
    )
    assert twice.exit_code != 0 and "one row per search seed" in twice.output
    # Tables distilled from different teachers are not pooled (the table records its teacher).
    table = json.loads((tmp_path / "nas1" / "sweep.json").read_text())
    table["teacher"] = {"weights_sha256": "ab" * 32}
    (tmp_path / "nas1" / "sweep.json").write_text(json.dumps(table))
    mixed = CliRunner().invoke(
        app, [*args, "--nas", str(tmp_path / "nas0"), "--nas", str(tmp_path / "nas1")]
    )
    assert mixed.exit_code != 0 and "different teachers" in mixed.output


def test_kdl_accuracy_names_its_seeds() -> None:
    seeded = {"val_accuracies": [0.79, 0.80], "val_accuracy": 0.795, "val_accuracy_std": 0.007}
    nas = [NAS[0], {**NAS[1], **seeded}]
    checks = check_targets(
        _rows("rkd", GOOD),
        teacher_accuracy=0.92,
        teacher_params=2_800_000,
        encoder_params=250_000,
        nas_rows=nas,
    )
    detail = _by_name(checks)["KDL-DARTS accuracy vs plain DARTS [points]"].detail
    assert detail.startswith("0.7950 ± 0.0070 (2 seeds) vs 0.8000 after")


def _searched(row: dict[str, Any], seed: int, params: int, runs: list[float]) -> dict[str, Any]:
    """``row`` as the sweep at search seed ``seed`` writes it."""
    search = {"lam": row["lambda"], "use_kd": row["use_kd"], "epochs": 10, "seed": seed}
    return {
        **row,
        "params": params,
        "val_accuracies": runs,
        "val_accuracy": sum(runs) / len(runs),
        "search_config": search,
        "eval_config": {"epochs": 5, "seed": seed},
    }


def _two_searches() -> list[dict[str, Any]]:
    return [
        _searched(NAS[0], 0, 200_000, [0.80, 0.81]),
        _searched(NAS[1], 0, 150_000, [0.79, 0.78]),
        _searched(NAS[0], 1, 220_000, [0.78, 0.79]),
        _searched(NAS[1], 1, 130_000, [0.795, 0.80]),
    ]


def test_several_search_seeds_are_pooled() -> None:
    checks = _by_name(
        check_targets(
            _rows("rkd", GOOD),
            teacher_accuracy=0.92,
            teacher_params=2_800_000,
            encoder_params=250_000,
            nas_rows=_two_searches(),
        )
    )
    size, acc = (
        checks["KDL-DARTS size vs plain DARTS"],
        checks["KDL-DARTS accuracy vs plain DARTS [points]"],
    )
    # Seed 0 alone misses the size (0.75), seed 1 alone meets it (0.59): the pool is judged.
    assert size.value == pytest.approx(140_000 / 210_000) and size.met is True
    assert (
        "search seeds 0, 1" in size.detail
        and "150,000 / 200,000 and 130,000 / 220,000" in size.detail
    )
    # Every protocol run of both searches: 0.79125 vs 0.795.
    assert acc.value == pytest.approx(100 * (0.79125 - 0.795)) and acc.met is True
    assert "0.7913 ± 0.0085 (4 runs) vs 0.7950 ± 0.0129 (4 runs)" in acc.detail


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda rows: rows[:3], "different searches"),
        (lambda rows: [rows[0], rows[1], rows[0], rows[1]], "one row per search seed"),
        (
            lambda rows: [*rows[:3], {**rows[3], "eval_config": {"epochs": 9, "seed": 1}}],
            "not the same budget",
        ),
        (
            lambda rows: [*rows[:2], *({**r, "eval_split": "cifar10/train"} for r in rows[2:])],
            "different teachers or test splits",
        ),
        # One row a side is checked too: the same search seed, the same budget.
        (lambda rows: [rows[0], rows[3]], "different searches"),
        (
            lambda rows: [
                rows[0],
                {**rows[1], "search_config": {**rows[1]["search_config"], "epochs": 99}},
            ],
            "not the same budget",
        ),
    ],
)
def test_tables_that_cannot_be_pooled_are_refused(edit: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_targets(
            _rows("rkd", GOOD),
            teacher_accuracy=0.92,
            teacher_params=2_800_000,
            encoder_params=250_000,
            nas_rows=edit(_two_searches()),
        )
