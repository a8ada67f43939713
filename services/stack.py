"""The local stack: the four services as child processes on 127.0.0.1 (``rkdsc up``).

:class:`Stack` starts ``python -m services.<name>`` for the receiver, channel emulator,
transmitter and control plane, wires their ports and targets through ``RKDSC_<NAME>_*``
environment variables, sends each child's output to ``<run dir>/<name>.log``, waits until
the control plane's ``/readyz`` answers 200, and stops them all on :meth:`Stack.stop`
(SIGTERM upstream first, a grace period, then SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import httpx

from services.control.settings import default_token_file

if TYPE_CHECKING:
    from services.certs import CertSet

__all__ = [
    "SERVICES",
    "Stack",
    "StackCancelled",
    "StackError",
    "StackPorts",
    "write_token_file",
]

log = logging.getLogger(__name__)

SERVICES = ("receiver", "channel", "transmitter", "control")
"""The stack's services, downstream first (the order they are started)."""

_STOP_ORDER = ("control", "transmitter", "channel", "receiver")
"""Upstream first: traffic sources stop before the services that answer them."""

_KILL_WAIT_SECONDS = 5.0
"""How long to wait for a SIGKILLed child to be reaped [s]."""


class StackError(RuntimeError):
    """The stack could not be started (a port in use, a child exited, not ready in time)."""


class StackCancelled(StackError):
    """Start-up was cancelled (Ctrl-C/SIGTERM) before the stack was ready."""


@dataclass(frozen=True)
class StackPorts:
    """The seven TCP ports of a stack (defaults: the documented ones)."""

    transmitter: int = 50051
    channel: int = 50052
    receiver: int = 50053
    transmitter_metrics: int = 9101
    channel_metrics: int = 9102
    receiver_metrics: int = 9103
    control: int = 8000

    def __post_init__(self) -> None:
        ports = list(asdict(self).values())
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports must lie in [1, 65535], got {bad}")
        if len(set(ports)) != len(ports):
            raise ValueError(f"the stack's ports must all differ, got {asdict(self)}")

    @classmethod
    def from_base(cls, base: int) -> StackPorts:
        """Seven consecutive ports from ``base``: transmitter, channel, receiver gRPC, their
        three metrics ports, then the control plane (``--base-port``)."""
        if not 1024 <= base <= 65535 - 6:
            raise ValueError(f"--base-port must lie in [1024, 65529], got {base}")
        return cls(*(base + i for i in range(7)))

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> StackPorts:
        """Seven ports the OS reports free now (bound to port 0 together, then released)."""
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in range(7)]
            for s in socks:
                s.bind((host, 0))
            return cls(*(int(s.getsockname()[1]) for s in socks))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def in_use(self, host: str = "127.0.0.1") -> list[int]:
        """The ports something is listening on (bind fails even with SO_REUSEADDR)."""
        busy = []
        for port in asdict(self).values():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError:
                    busy.append(port)
        return busy


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically with mode 0600 (its folder 0700 if created)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".control-token-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _default_run_dir() -> Path:
    base = Path("runs") / f"stack-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class Stack:
    """The four services as child processes. Use :meth:`start`; stop with :meth:`stop` or
    as a context manager.

    Attributes:
        host: the address every service binds (127.0.0.1).
        ports: the stack's ports.
        run_dir: where the logs (``<name>.log``) and ``stack.json`` go.
        token_file: the file holding the API token, when the stack generated one.
        tls: the certificates of the gRPC links (mutual TLS), or ``None`` (plaintext).
        processes: the children by service name.
    """

    def __init__(
        self,
        *,
        host: str,
        ports: StackPorts,
        run_dir: Path,
        token: str,
        token_file: Path | None,
        grace_seconds: float,
        tls: CertSet | None = None,
    ) -> None:
        self.host = host
        self.ports = ports
        self.run_dir = run_dir
        self.token = token
        self.token_file = token_file
        self.grace_seconds = grace_seconds
        self.tls = tls
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._log_files: list[IO[bytes]] = []
        self._envs: dict[str, dict[str, str]] = {}
        self._stopped = False

    # ------------------------------------------------------------------ start

    @classmethod
    def start(
        cls,
        *,
        ports: StackPorts | None = None,
        host: str = "127.0.0.1",
        token: str | None = None,
        token_file: Path | None = None,
        weights_dir: Path | None = None,
        data_dir: Path | None = None,
        run_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        tls_dir: Path | None = None,
        ready_timeout: float = 120.0,
        grace_seconds: float = 10.0,
        cancel: Callable[[], bool] | None = None,
    ) -> Stack:
        """Start the four services and wait until the control plane's ``/readyz`` is 200.

        Args:
            ports: the ports (default: the documented ones; see :meth:`StackPorts.free`).
            host: the address every service binds.
            token: the API token; if ``None``, a random one is generated and written to
                ``token_file`` (mode 0600).
            token_file: where a generated token goes (default:
                :func:`~services.control.settings.default_token_file` of the control port).
            weights_dir: link weights for the transmitter and receiver (default: theirs).
            data_dir: the dataset source the transmitter streams runs from.
            run_dir: logs and ``stack.json`` (default: ``runs/stack-<timestamp>``).
            env: extra environment variables for every child (over ``os.environ``).
            tls_dir: certificates from ``rkdsc certs``: every gRPC link then uses mutual
                TLS (default: plaintext, unless the environment sets ``RKDSC_*_TLS__*``).
            ready_timeout: longest wait for readiness [s].
            grace_seconds: shutdown grace per :meth:`stop` [s].
            cancel: polled while waiting; returning True stops the stack and raises
                :class:`StackCancelled`.

        Raises:
            StackError: a port in use, a child that exited, or not ready in time (the
                children started so far are stopped first).
            FileNotFoundError: ``tls_dir`` lacks a certificate or key.
        """
        tls = None
        if tls_dir is not None:
            from services.certs import CertSet

            tls = CertSet.from_folder(tls_dir)
        ports = ports or StackPorts()
        busy = ports.in_use(host)
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} on {host} are in use (another `rkdsc up`?); "
                "stop it or pick other ports with --base-port"
            )
        run_dir = Path(run_dir) if run_dir is not None else _default_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        generated = token is None
        if token is None:
            token = secrets.token_urlsafe(32)
            if token_file is None:  # one per control port: stacks side by side keep theirs
                token_file = default_token_file(ports.control)
            token_file = Path(token_file)
            write_token_file(token_file, token)
        else:
            token_file = None
        stack = cls(
            host=host,
            ports=ports,
            run_dir=run_dir,
            token=token,
            token_file=token_file,
            grace_seconds=grace_seconds,
            tls=tls,
        )
        atexit.register(stack._kill_on_exit)
        try:
            base = {**os.environ, **(env or {})}
            for name in SERVICES:
                stack._launch(name, stack._child_env(name, base, weights_dir, data_dir))
            stack._write_manifest(generated)
            stack.wait_ready(ready_timeout, cancel=cancel)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _child_env(
        self,
        name: str,
        base: Mapping[str, str],
        weights_dir: Path | None,
        data_dir: Path | None,
    ) -> dict[str, str]:
        p, h = self.ports, self.host
        env = {k: v for k, v in base.items() if not k.startswith("RKDSC_CONTROL_TOKEN")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.tls is not None:
            env.update(self.tls.env(name))
        target = {
            "transmitter": f"{h}:{p.transmitter}",
            "channel": f"{h}:{p.channel}",
            "receiver": f"{h}:{p.receiver}",
        }
        prefix = f"RKDSC_{name.upper()}_"
        env[prefix + "HOST"] = h
        if name == "control":
            env[prefix + "PORT"] = str(p.control)
            env.setdefault(prefix + "STATE_FILE", str(self.run_dir / "control.sqlite"))
            env[prefix + "TRANSMITTER_TARGET"] = target["transmitter"]
            env[prefix + "CHANNEL_TARGET"] = target["channel"]
            env[prefix + "RECEIVER_TARGET"] = target["receiver"]
            if self.token_file is not None:
                env[prefix + "TOKEN_FILE"] = str(self.token_file)
            else:
                env[prefix + "TOKEN"] = self.token
            return env
        env[prefix + "PORT"] = str(getattr(p, name))
        env[prefix + "METRICS_PORT"] = str(getattr(p, f"{name}_metrics"))
        if name == "channel":
            env[prefix + "RECEIVER_TARGET"] = target["receiver"]
        if name == "transmitter":
            env[prefix + "CHANNEL_TARGET"] = target["channel"]
            if data_dir is not None:
                env[prefix + "DATA_DIR"] = str(Path(data_dir).resolve())
        if name in ("transmitter", "receiver"):
            # Four processes share the machine: torch's default, one intra-op thread per core
            # in each of them, oversubscribes it, and the threads spin against each other.
            env.setdefault(prefix + "TORCH_THREADS", "1")
            if weights_dir is not None:
                env[prefix + "WEIGHTS_DIR"] = str(Path(weights_dir).resolve())
        return env

    def _launch(self, name: str, env: dict[str, str]) -> None:
        self._envs[name] = env
        log_path = self.run_dir / f"{name}.log"
        log_file = log_path.open("ab")
        self._log_files.append(log_file)
        self.logs[name] = log_path
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only `rkdsc up`, which stops us in order
        )
        log.info("started %s (pid %d), log %s", name, self.processes[name].pid, log_path)

    def _write_manifest(self, generated_token: bool) -> None:
        doc = {
            "host": self.host,
            "ports": self.ports.as_dict(),
            "control_url": self.control_url,
            "pids": {name: proc.pid for name, proc in self.processes.items()},
            "logs": {name: str(path) for name, path in self.logs.items()},
            "token_file": str(self.token_file) if self.token_file is not None else None,
            "token_generated": generated_token,
            "tls_dir": str(self.tls.folder) if self.tls is not None else None,
        }
        (self.run_dir / "stack.json").write_text(json.dumps(doc, indent=2) + "\n")

    # ------------------------------------------------------------------ state

    @property
    def control_url(self) -> str:
        """Base URL of the control plane's REST API."""
        return f"http://{self.host}:{self.ports.control}"

    def endpoints(self) -> list[tuple[str, str]]:
        """``(service, where)`` lines for humans."""
        h, p = self.host, self.ports
        grpc = "gRPC (mutual TLS)" if self.tls is not None else "gRPC"
        out = []
        for name in ("transmitter", "channel", "receiver"):
            out.append(
                (
                    name,
                    f"{grpc} {h}:{getattr(p, name)}   "
                    f"metrics http://{h}:{getattr(p, f'{name}_metrics')}/metrics",
                )
            )
        out.append(
            (
                "control",
                f"REST {self.control_url}   docs {self.control_url}/docs   "
                f"metrics {self.control_url}/metrics",
            )
        )
        return out

    def exited(self) -> dict[str, int]:
        """Children that have exited, with their exit codes."""
        out = {}
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                out[name] = code
        return out

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` lines of a child's log."""
        try:
            text = self.logs[name].read_text(errors="replace")
        except (KeyError, OSError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float, *, cancel: Callable[[], bool] | None = None) -> None:
        """Poll ``/readyz`` until 200; raise :class:`StackError` if a child exits or time runs
        out (:class:`StackCancelled` if ``cancel()`` turns True)."""
        deadline = time.monotonic() + timeout
        last = "the control plane does not answer yet"
        with httpx.Client(timeout=2.0) as http:
            while True:
                if cancel is not None and cancel():
                    raise StackCancelled("start-up cancelled")
                for name, code in self.exited().items():
                    raise StackError(
                        f"{name} exited with code {code} before the stack was ready; "
                        f"the end of {self.logs[name]}:\n{self.log_tail(name)}"
                    )
                try:
                    resp = http.get(f"{self.control_url}/readyz")
                    if resp.status_code == 200:
                        return
                    not_ready = resp.json().get("not_ready", [])
                    last = f"/readyz is {resp.status_code}; not serving yet: {', '.join(not_ready)}"
                except (httpx.HTTPError, ValueError) as err:
                    last = f"the control plane does not answer yet ({type(err).__name__})"
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"the stack was not ready after {timeout:g} s: {last}; "
                        f"logs in {self.run_dir}"
                    )
                time.sleep(0.25)

    # ------------------------------------------------------------- fault drills

    def kill(self, name: str) -> int | None:
        """SIGKILL one service, as a crash would, and reap it; its exit code.

        Raises:
            KeyError: ``name`` is not one of the stack's services.
        """
        proc = self.processes[name]
        _signal(proc, signal.SIGKILL)
        _wait([proc], time.monotonic() + _KILL_WAIT_SECONDS)
        return proc.poll()

    def restart(self, name: str) -> None:
        """Start ``name`` again (after it exited or was killed) with the same environment.

        Its log continues in the same file; :meth:`wait_ready` tells when it serves again.

        Raises:
            StackError: ``name`` is still running.
        """
        if self.processes[name].poll() is None:
            raise StackError(f"{name} is still running (pid {self.processes[name].pid})")
        self._launch(name, self._envs[name])
        self._write_manifest(self.token_file is not None)

    # ------------------------------------------------------------------- stop

    def stop(self, grace_seconds: float | None = None) -> dict[str, int | None]:
        """SIGTERM the children upstream first, wait up to the grace period, then SIGKILL.

        Each stage waits at most half of the remaining grace, so the services downstream
        still get time to drain. Returns the exit codes (negative: killed by that signal).
        Idempotent.
        """
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + grace
        for name in _STOP_ORDER:
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            _signal(proc, signal.SIGTERM)
            _wait([proc], time.monotonic() + (deadline - time.monotonic()) / 2)
        _wait(self.processes.values(), deadline)
        for name, proc in self.processes.items():
            if proc.poll() is None:
                log.warning("%s did not stop within %.1f s: SIGKILL", name, grace)
                _signal(proc, signal.SIGKILL)
        _wait(self.processes.values(), time.monotonic() + _KILL_WAIT_SECONDS)
        if not self._stopped:
            self._stopped = True
            self._remove_token_file()
            for f in self._log_files:
                f.close()
            atexit.unregister(self._kill_on_exit)
        return {name: proc.poll() for name, proc in self.processes.items()}

    def _remove_token_file(self) -> None:
        if self.token_file is None:
            return
        with contextlib.suppress(OSError):
            if self.token_file.read_text().strip() == self.token:
                self.token_file.unlink()

    def _kill_on_exit(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                _signal(proc, signal.SIGKILL)
        self._remove_token_file()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal a child's process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _wait(procs: Iterable[subprocess.Popen[bytes]], deadline: float) -> None:
    for proc in procs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.poll()
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=remaining)
