"""``rkdsc serve control``: the control plane as a process, answering and stopping cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..stack_support import run_service_module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_control_answers_and_exits_0_on_sigterm() -> None:
    port = _free_port()
    env = {
        "RKDSC_CONTROL_PORT": str(port),
        "RKDSC_CONTROL_TOKEN": "t0ken",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from rkdsc_core.cli import main; sys.argv[0] = 'rkdsc'; main()",
            "serve",
            "control",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "control plane did not start"
                time.sleep(0.2)
        assert resp.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503  # nothing else is running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _start(**settings: str) -> subprocess.CompletedProcess[str]:
    """``python -m services.control`` with only these ``RKDSC_CONTROL_*`` settings; it is
    expected to exit at once."""
    env = {f"RKDSC_CONTROL_{k.upper()}": v for k, v in settings.items()}
    return run_service_module("control", env, timeout=60)


class TestBadSettingsAtStartup:
    """As the gRPC services: exit 2 naming the setting or the file, never a traceback."""

    @pytest.mark.parametrize(
        ("name", "value"), [("port", "abc"), ("port", "70000"), ("deadline_seconds", "0")]
    )
    def test_invalid_setting_exits_2_naming_it(self, name: str, value: str) -> None:
        proc = _start(**{"port": str(_free_port()), "token": "t0ken", name: value})
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "error: invalid control plane settings (RKDSC_CONTROL_*)" in proc.stderr
        assert name in proc.stderr, proc.stderr

    def test_a_refused_token_is_not_echoed(self) -> None:
        proc = _start(port=str(_free_port()), token="s3cret tok\n")
        assert proc.returncode == 2, proc.stderr
        assert "token" in proc.stderr and "s3cret" not in proc.stderr, proc.stderr

    def test_unusable_state_file_exits_2_naming_it(self, tmp_path: Path) -> None:
        state_file = tmp_path / "control.sqlite"
        state_file.write_bytes(b"not a SQLite database, " * 100)
        proc = _start(port=str(_free_port()), token="t0ken", state_file=str(state_file))
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"error: control plane cannot start: RKDSC_CONTROL_STATE_FILE={state_file}" in (
            proc.stderr
        )
