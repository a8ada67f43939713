"""scripts/reproduce_gpu.sh runs the stages side by side but in dependency order, with one
student architecture for RKD and the CE-only baseline, and stops at a failed stage (fake
rkdsc)."""

from __future__ import annotations

from pathlib import Path

from tests.core._fake_rkdsc import run_recipe
from tests.deploy._support import ROOT

SCRIPT = ROOT / "scripts" / "reproduce_gpu.sh"


def _run(tmp_path: Path, *, fail: str = "", **env: str) -> tuple[int, list[list[str]]]:
    """The script's exit status and the fake ``rkdsc``'s calls, in the order they started."""
    result, calls = run_recipe(SCRIPT, tmp_path, env, fail=fail)
    return result.returncode, calls


def _index(calls: list[list[str]], *words: str) -> int:
    """Position of the one call whose argv holds all ``words``."""
    hits = [i for i, c in enumerate(calls) if all(w in c for w in words)]
    assert len(hits) == 1, (words, calls)
    return hits[0]


def test_stages_run_in_dependency_order(tmp_path: Path) -> None:
    status, calls = _run(tmp_path)
    assert status == 0
    runs = str(tmp_path / "runs")
    assert len(calls) == 12  # data, 3 teachers, ensemble, cache, student, 3 codecs, CE, sweep
    teachers = [_index(calls, "teacher", "--out", f"{runs}/teacher-{m}")
                for m in ("fastnet", "fastnet-wide", "resnet18")]  # fmt: skip
    ensemble = _index(calls, "ensemble")
    cache = _index(calls, "cache-teacher")
    student = _index(calls, "student", "--teacher-cache")
    codecs = [_index(calls, "codec", "--out", f"{runs}/{n}")
              for n in ("rkd", "stage1-only", "teacher-codec")]  # fmt: skip
    ce = _index(calls, "link")
    sweep = _index(calls, "sweep")
    assert _index(calls, "prepare") == 0
    assert max(teachers) < ensemble < cache < student < min(codecs)
    assert sweep == len(calls) - 1 and ce < student  # CE-only starts with the teachers
    # The ensemble is of the three teachers; the teacher's own codec sits behind it.
    assert calls[ensemble][2:5] == [f"{runs}/teacher-{m}/teacher"
                                    for m in ("fastnet", "fastnet-wide", "resnet18")]  # fmt: skip
    assert calls[codecs[2]][calls[codecs[2]].index("--student") + 1] == f"{runs}/teacher/teacher"
    assert "--no-teacher-targets" in calls[codecs[1]]
    # RKD's student and the CE-only baseline share the architecture; CE gets both budgets.
    arch = ["--genotype", "darts_v2", "--c", "40", "--layers", "5"]
    for i in (student, ce):
        assert " ".join(arch) in " ".join(calls[i])
    assert calls[ce][calls[ce].index("--epochs") + 1] == "42"
    assert len([c for c in calls[sweep] if c == "--weights"]) == 4


def test_knobs(tmp_path: Path) -> None:
    status, calls = _run(
        tmp_path, STUDENT_C="24", STUDENT_EPOCHS="5", CODEC_EPOCHS="2", TEACHER_CODEC="0",
        SWEEP_LIMIT="0",
    )  # fmt: skip
    assert status == 0
    assert not any("sweep" in c for c in calls) and len(calls) == 10
    ce = _index(calls, "link")
    assert calls[ce][calls[ce].index("--epochs") + 1] == "7"
    assert calls[ce][calls[ce].index("--c") + 1] == "24"


def test_a_failed_stage_stops_the_chain(tmp_path: Path) -> None:
    status, calls = _run(tmp_path, fail="teacher-fastnet-wide")
    assert status != 0
    assert not any("ensemble" in c or "codec" in c for c in calls)
    log = (tmp_path / "runs" / "stages.log").read_text()
    assert "FAILED teacher-fastnet-wide" in log and "stopping" in log
