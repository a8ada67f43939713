"""``rkdsc serve control``: the control plane as a process, answering and stopping cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx


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
