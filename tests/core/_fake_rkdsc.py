"""Run a shell recipe (scripts/reproduce*.sh) against a fake ``rkdsc`` that records its calls."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path


def run_recipe(
    script: Path,
    tmp_path: Path,
    env: Mapping[str, str],
    *,
    fail: str = "",
    delay: float = 0.0,
    slow: str = "",
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, list[str]]]]:
    """Run ``script RUNS`` (``RUNS`` = ``tmp_path/runs``) with ``env`` (the script's knobs)
    and ``RKDSC`` set to a fake that logs ``start ARGV``, waits ``delay`` seconds, logs
    ``end ARGV`` (each line written at once: stages may run in parallel) and exits 0, or 1
    without an end line when ARGV contains ``fail`` (non-empty); it waits ten times as long
    when ARGV contains ``slow`` (non-empty). Returns the finished
    process and the events in the order they happened: ``("start" | "end", argv)``."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "rkdsc"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'line=$(printf "%q " "$@")\n'
        f'echo "start $line" >> {shlex.quote(str(log))}\n'
        f"fail={shlex.quote(fail)}\n"
        '[[ -n "$fail" && "$line" == *"$fail"* ]] && exit 1\n'
        f"slow={shlex.quote(slow)}\n"
        f'if [[ -n "$slow" && "$line" == *"$slow"* ]]; then sleep {10 * delay}; '
        f"else sleep {delay}; fi\n"
        f'echo "end $line" >> {shlex.quote(str(log))}\n'
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(script), str(tmp_path / "runs")],
        env={"PATH": os.environ["PATH"], "RKDSC": str(fake), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    events = []
    for line in lines:
        kind, _, argv = line.partition(" ")
        events.append((kind, shlex.split(argv)))
    return result, events


def starts(events: list[tuple[str, list[str]]]) -> list[list[str]]:
    """The calls' argv, in the order they started."""
    return [argv for kind, argv in events if kind == "start"]
