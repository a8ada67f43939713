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
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run ``script RUNS`` (``RUNS`` = ``tmp_path/runs``) with ``env`` (the script's knobs)
    and ``RKDSC`` set to a fake that
    appends its argv to ``tmp_path/calls.txt``, one line written at once (stages may run in
    parallel), and exits 1 when that line contains ``fail`` (non-empty); the finished
    process and every call's argv so far, in the order they started."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "rkdsc"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'line=$(printf "%q " "$@")\n'
        f'echo "$line" >> {log}\n'
        f'[[ -n "{fail}" && "$line" == *"{fail}"* ]] && exit 1\n'
        "sleep 0.2\n"  # a stage that should wait for this one shows whether it does
        "exit 0\n"
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
    return result, [shlex.split(line) for line in lines]
