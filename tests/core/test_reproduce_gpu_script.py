"""scripts/reproduce_gpu.sh runs the stages side by side but each after the stages it needs,
with one student architecture for RKD and the CE-only baseline, keeps finished stages on a
rerun, and stops everything at a failed stage (fake rkdsc)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.core._fake_rkdsc import run_recipe, starts
from tests.deploy._support import ROOT

SCRIPT = ROOT / "scripts" / "reproduce_gpu.sh"
TEACHERS = ("fastnet", "fastnet-wide", "resnet18")

Events = list[tuple[str, list[str]]]


def _run(
    tmp_path: Path, *, fail: str = "", slow: str = "", delay: float = 0.3, **env: str
) -> tuple[subprocess.CompletedProcess[str], Events]:
    return run_recipe(SCRIPT, tmp_path, env, fail=fail, slow=slow, delay=delay)


def _at(events: Events, kind: str, *words: str) -> int:
    """Position of the one ``kind`` event whose argv holds all ``words``."""
    hits = [i for i, (k, argv) in enumerate(events) if k == kind and all(w in argv for w in words)]
    assert len(hits) == 1, (kind, words, events)
    return hits[0]


def test_each_stage_starts_after_the_stages_it_needs_end(tmp_path: Path) -> None:
    result, events = _run(tmp_path, delay=1.0)  # 1 s a stage: parallel ones surely overlap
    assert result.returncode == 0, result.stderr
    runs = str(tmp_path / "runs")
    calls = starts(events)
    assert len(calls) == 12  # data, 3 teachers, ensemble, cache, student, 3 codecs, CE, sweep
    assert len([k for k, _ in events if k == "end"]) == 12

    def stage(*words: str) -> tuple[int, int]:
        return _at(events, "start", *words), _at(events, "end", *words)

    data = stage("prepare")
    teachers = [stage("teacher", "--out", f"{runs}/teacher-{m}") for m in TEACHERS]
    ensemble, cache = stage("ensemble"), stage("cache-teacher")
    student = stage("student", "--teacher-cache")
    names = ("rkd", "stage1-only", "teacher-codec")
    codecs = [stage("codec", "--out", f"{runs}/{n}") for n in names]
    ce, sweep = stage("link"), stage("sweep")
    assert data[1] < min(s for s, _ in [*teachers, ce])  # decoded once, before any reader
    assert max(e for _, e in teachers) < ensemble[0] and ensemble[1] < cache[0]
    assert cache[1] < student[0] and student[1] < min(s for s, _ in codecs)
    assert ce[0] < student[0]  # the CE-only baseline starts with the teachers
    assert max(e for _, e in [*codecs, ce]) < sweep[0]
    # Side by side: the teachers (and CE) overlap, as do the three codecs.
    assert max(s for s, _ in teachers) < min(e for _, e in teachers)
    assert max(s for s, _ in codecs) < min(e for _, e in codecs)

    ensemble_argv = calls[[c[:2] for c in calls].index(["models", "ensemble"])]
    assert ensemble_argv[2:5] == [f"{runs}/teacher-{m}/teacher" for m in TEACHERS]
    tcodec = events[codecs[2][0]][1]
    assert tcodec[tcodec.index("--student") + 1] == f"{runs}/teacher/teacher"
    assert "--no-teacher-targets" in events[codecs[1][0]][1]
    # RKD's student and the CE-only baseline share the architecture; CE gets both budgets.
    arch = "--genotype darts_v2 --c 40 --layers 5"
    ce_argv, student_argv = events[ce[0]][1], events[student[0]][1]
    assert arch in " ".join(ce_argv) and arch in " ".join(student_argv)
    assert ce_argv[ce_argv.index("--epochs") + 1] == "42"
    assert events[sweep[0]][1].count("--weights") == 4


def test_knobs(tmp_path: Path) -> None:
    result, events = _run(
        tmp_path, STUDENT_C="24", STUDENT_EPOCHS="5", CODEC_EPOCHS="2", TEACHER_CODEC="0",
        SWEEP_LIMIT="0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = starts(events)
    assert not any("sweep" in c for c in calls) and len(calls) == 10
    ce = events[_at(events, "start", "link")][1]
    assert ce[ce.index("--epochs") + 1] == "7" and ce[ce.index("--c") + 1] == "24"


def test_a_rerun_keeps_the_finished_ensemble_and_cache(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "teacher").mkdir(parents=True)
    (runs / "teacher" / "teacher.json").write_text("{}")
    (runs / "teacher-cache.json").write_text("{}")
    result, events = _run(tmp_path, SWEEP_LIMIT="0")
    assert result.returncode == 0, result.stderr
    assert not any(c[:2] in (["models", "ensemble"], ["train", "cache-teacher"])
                   for c in starts(events))  # fmt: skip


def test_a_failed_stage_stops_everything_and_says_where(tmp_path: Path) -> None:
    result, events = _run(tmp_path, fail="teacher-fastnet-wide", STUDENT_EPOCHS="500")
    assert result.returncode != 0
    calls = starts(events)
    assert not any(c[:2] in (["models", "ensemble"], ["train", "codec"]) for c in calls)
    log = (tmp_path / "runs" / "stages.log").read_text()
    assert "FAILED teacher-fastnet-wide" in log and "logs/teacher-fastnet-wide.log" in log
    assert "stopping" in log


def test_a_failed_foreground_stage_is_logged_too(tmp_path: Path) -> None:
    result, events = _run(tmp_path, fail="ensemble")
    assert result.returncode != 0
    assert "FAILED ensemble" in (tmp_path / "runs" / "stages.log").read_text()
    assert not any(c[:2] == ["train", "cache-teacher"] for c in starts(events))


def test_the_ce_lane_is_stopped_with_the_script(tmp_path: Path) -> None:
    """A failure in lane 1 ends the CE-only run too: a rerun must not find it running."""
    result, events = _run(tmp_path, fail="teacher-resnet18", slow="link")
    assert result.returncode != 0
    ce_ended = [argv for kind, argv in events if kind == "end" and argv[:2] == ["train", "link"]]
    assert ce_ended == []  # killed during its 3 s, not left to finish
    again, _ = _run(tmp_path)  # the lock is free again: nothing was left holding it
    assert again.returncode == 0, again.stderr


def test_one_run_at_a_time_per_folder(tmp_path: Path) -> None:
    """While a run holds RUNS, a second one is refused before it starts anything."""
    fake = tmp_path / "hold"
    fake.write_text("#!/usr/bin/env bash\nsleep 3\n")  # the first run's data stage
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "RKDSC": str(fake)}
    first = subprocess.Popen(
        ["bash", str(SCRIPT), str(tmp_path / "runs")], env=env, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):  # until the first run has taken the lock and started a stage
            if (tmp_path / "runs" / "stages.log").exists():
                break
            time.sleep(0.05)
        result, events = _run(tmp_path)
        assert result.returncode == 1 and "in use" in result.stderr
        assert events == []
    finally:
        first.terminate()
        first.wait(timeout=10)


def _ended(events: Events, *words: str) -> bool:
    return any(k == "end" and all(w in argv for w in words) for k, argv in events)


def test_a_given_teacher_replaces_the_three_and_their_ensemble(tmp_path: Path) -> None:
    teacher = tmp_path / "ens" / "teacher"
    teacher.parent.mkdir()
    teacher.with_suffix(".json").write_text("{}")
    result, events = _run(tmp_path, TEACHER=str(teacher))
    assert result.returncode == 0, result.stderr
    calls = starts(events)
    assert len(calls) == 8  # data, cache, student, 3 codecs, CE, sweep
    assert not any(c[:2] in (["train", "teacher"], ["models", "ensemble"]) for c in calls)
    cache = events[_at(events, "start", "cache-teacher")][1]
    assert cache[cache.index("--teacher") + 1] == str(teacher)
    tcodec = events[_at(events, "start", "codec", "--out", f"{tmp_path}/runs/teacher-codec")][1]
    assert tcodec[tcodec.index("--student") + 1] == str(teacher)


def test_a_teacher_that_is_no_checkpoint_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    result, events = _run(tmp_path, TEACHER=str(tmp_path / "no-such-teacher"))
    assert result.returncode == 2 and "not a teacher checkpoint" in result.stderr
    assert events == []


def test_a_failed_stage_stops_its_slower_siblings_at_once(tmp_path: Path) -> None:
    # FastNet fails at once; ResNet-18 would take 10 s: it is stopped, not waited for (a
    # waited-for stage logs its end).
    result, events = _run(tmp_path, fail="teacher-fastnet ", slow="resnet18-cifar", delay=1.0)
    assert result.returncode != 0
    assert not _ended(events, "--model", "resnet18-cifar")
    assert "FAILED teacher-fastnet " in (tmp_path / "runs" / "stages.log").read_text() + " "


def test_a_failed_ce_lane_stops_the_teachers(tmp_path: Path) -> None:
    result, events = _run(tmp_path, fail="train link", slow="resnet18-cifar", delay=1.0)
    assert result.returncode != 0
    assert not _ended(events, "--model", "resnet18-cifar")
    assert "FAILED ce-only" in (tmp_path / "runs" / "stages.log").read_text()
