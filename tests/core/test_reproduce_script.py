"""scripts/reproduce.sh runs the stages in order, with the knobs it documents (fake rkdsc)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from tests.core._fake_rkdsc import run_recipe, starts
from tests.deploy._support import ROOT

SCRIPT = ROOT / "scripts" / "reproduce.sh"


def _run(tmp_path: Path, *, status: int = 0, **env: str) -> list[list[str]]:
    """Run the script with a fake ``rkdsc`` that records each call; the calls' argv
    (``status``: the exit status the script must end with)."""
    result, events = run_recipe(SCRIPT, tmp_path, env, timeout=30)
    assert result.returncode == status, result.stderr
    if status:
        assert "error:" in result.stderr
    return starts(events)


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_default_chain(tmp_path: Path) -> None:
    calls = _run(tmp_path)
    runs = str(tmp_path / "runs")
    assert [c[:2] for c in calls] == [
        ["train", "teacher"],
        ["train", "cache-teacher"],
        ["nas", "sweep"],
        ["nas", "sweep"],
        ["train", "student"],
        ["train", "codec"],
        ["train", "codec"],
        ["train", "codec"],
        ["train", "link"],
        ["eval", "sweep"],
    ]
    teacher, cache, nas, nas1, student, rkd, stage1, tcodec, ce, sweep = calls
    assert _option(cache, "--teacher") == f"{runs}/teacher/teacher"
    assert _option(nas, "--lambdas") == "0,0.1,0.25" and _option(nas, "--eval-seeds") == "2"
    # One lambda table per search seed; the student's genotype comes from seed 0's.
    assert [(_option(n, "--out"), _option(n, "--seed")) for n in (nas, nas1)] == [
        (f"{runs}/nas", "0"),
        (f"{runs}/nas-seed1", "1"),
    ]
    assert _option(nas1, "--lambdas") == "0,0.1,0.25"
    (tmp_path / "one").mkdir()
    only = [c for c in _run(tmp_path / "one", SEARCH_SEEDS="0") if c[:2] == ["nas", "sweep"]]
    assert [_option(n, "--seed") for n in only] == ["0"]
    genotype = f"{runs}/nas/kdl-darts_lambda-0.1/row.json"
    assert _option(student, "--genotype") == _option(ce, "--genotype") == genotype
    assert "--no-teacher-targets" in stage1 and "--no-teacher-targets" not in rkd
    assert _option(tcodec, "--student") == f"{runs}/teacher/teacher"
    # The CE-only baseline gets the whole epoch budget of stage 1 + stage 2.
    assert _option(ce, "--epochs") == str(30 + 12)
    assert "--epochs" not in teacher  # the preset's
    (tmp_path / "e").mkdir()
    assert _option(_run(tmp_path / "e", TEACHER_EPOCHS="20")[0], "--epochs") == "20"
    named = [w.split("=")[0] for w in sweep if "=" in w]
    assert named == ["rkd", "stage1-only", "ce-only", "teacher"]


def test_given_teacher_and_genotype_skip_their_stages(tmp_path: Path) -> None:
    calls = _run(
        tmp_path,
        TEACHER="t/teacher",
        GENOTYPE="darts_v2",
        STUDENT_EPOCHS="7",
        CODEC_EPOCHS="3",
        TEACHER_CODEC="0",
    )
    kinds = [c[:2] for c in calls]
    assert ["train", "teacher"] not in kinds and ["nas", "sweep"] not in kinds
    cache, student, rkd, stage1, ce, sweep = calls
    assert _option(cache, "--teacher") == "t/teacher"
    assert _option(student, "--genotype") == _option(ce, "--genotype") == "darts_v2"
    assert (_option(student, "--epochs"), _option(rkd, "--epochs")) == ("7", "3")
    assert _option(ce, "--epochs") == "10"
    # No teacher codec, and so no teacher in the sweep.
    assert "--no-teacher-targets" in stage1
    assert [w.split("=")[0] for w in sweep if "=" in w] == ["rkd", "stage1-only", "ce-only"]


def test_a_kept_cache_must_be_the_given_teachers(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "t.json").write_text(json.dumps({"weights_sha256": "a" * 64}))
    cache = tmp_path / "runs" / "teacher-cache.json"
    cache.write_text(json.dumps({"teacher": {"weights_sha256": "a" * 64}}))
    knobs = {"TEACHER": str(tmp_path / "t"), "GENOTYPE": "darts_v2", "TEACHER_CODEC": "0"}
    calls = _run(tmp_path, **knobs)
    assert ["train", "cache-teacher"] not in [c[:2] for c in calls]  # kept
    cache.write_text(json.dumps({"teacher": {"weights_sha256": "b" * 64}}))
    (tmp_path / "calls.txt").unlink()
    assert _run(tmp_path, status=2, **knobs) == []  # another teacher's: stop before stage 1
    # The same weights under another config (a logit scale): another teacher too.
    (tmp_path / "t.json").write_text(json.dumps({"weights_sha256": "a" * 64, "config": {"s": 1}}))
    cache.write_text(json.dumps({"teacher": {"weights_sha256": "a" * 64, "config": {"s": 9}}}))
    assert _run(tmp_path, status=2, **knobs) == []


def test_teacher_ensemble_trains_the_three_members_and_joins_them(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    calls = _run(tmp_path, TEACHER_ENSEMBLE="1", GENOTYPE="darts_v2", TEACHER_EPOCHS="5")
    fastnet, wide, efficientnet, join, cache = calls[:5]
    assert [c[:2] for c in (fastnet, wide, efficientnet)] == [["train", "teacher"]] * 3
    assert "--model" not in fastnet and "--epochs" not in fastnet  # the preset, as shipped
    assert (_option(wide, "--widths"), _option(wide, "--epochs")) == ("128,384,384", "16")
    assert _option(efficientnet, "--model") == "efficientnet-lite0"
    outs = [f"{runs}/teacher-{m}" for m in ("fastnet", "fastnet-wide", "efficientnet")]
    assert [_option(c, "--out") for c in (fastnet, wide, efficientnet)] == outs
    members = [f"{out}/teacher" for out in outs]
    assert join == ["models", "ensemble", *members, "--out", f"{runs}/teacher/teacher"]
    # Every later stage uses the ensemble, the teacher codec included.
    assert _option(cache, "--teacher") == f"{runs}/teacher/teacher"
    tcodec = [c for c in calls if c[:2] == ["train", "codec"]][-1]
    assert _option(tcodec, "--student") == f"{runs}/teacher/teacher"
    # A joined ensemble is kept (its members resume by themselves).
    (tmp_path / "runs" / "teacher").mkdir(parents=True)
    (tmp_path / "runs" / "teacher" / "teacher.json").write_text("{}")
    (tmp_path / "calls.txt").unlink()
    again = _run(tmp_path, TEACHER_ENSEMBLE="1", GENOTYPE="darts_v2")
    assert ["models", "ensemble"] not in [c[:2] for c in again]


def test_editing_the_script_mid_run_does_not_change_the_run(tmp_path: Path) -> None:
    # A reproduction runs for hours; a git pull that rewrites the script meanwhile must not
    # derail it (bash reads a script as it goes unless it has read the whole of it first).
    script = tmp_path / "reproduce.sh"
    script.write_text(SCRIPT.read_text())
    log = tmp_path / "calls.txt"
    fake = tmp_path / "rkdsc"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%q " "$@" >> {log}\necho >> {log}\n'
        f"printf '#!/usr/bin/env bash\\necho rewritten; exit 7\\n' > {script}\n"
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(script), str(tmp_path / "runs")],
        env={"PATH": os.environ["PATH"], "RKDSC": str(fake), "GENOTYPE": "darts_v2"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rewritten" in script.read_text()  # the file did change under the run
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    assert calls[-1][:2] == ["eval", "sweep"] and len(calls) == 8


def test_ship_nas_without_a_sweep_changes_nothing(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kept.json").write_text("{}")
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "ship-nas", f"NAS_RUN={tmp_path / 'nope'}",
         f"NAS_DOCS={docs}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nothing was changed" in result.stdout + result.stderr
    assert (docs / "kept.json").is_file()
