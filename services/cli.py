"""``rkdsc up``, ``demo``, ``serve``, ``certs`` and ``bench``: the services from the command line.

``rkdsc_core.cli.main`` mounts these commands with :func:`register` when the ``services``
package is installed. Module-level imports stay light (typer only); each command imports
what it needs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer

if TYPE_CHECKING:
    from services.stack import Stack, StackPorts

__all__ = ["bench_cmd", "certs_cmd", "demo_cmd", "register", "serve_cmd", "up_cmd"]


class ServiceName(StrEnum):
    transmitter = "transmitter"
    channel = "channel"
    receiver = "receiver"
    control = "control"


def _quiet_http_logs() -> None:
    """One INFO line per HTTP request (httpx) drowns the commands' own output."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (as rkdsc_core.cli does)."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def serve_cmd(
    name: Annotated[ServiceName, typer.Argument(help="the service to run in this process")],
) -> None:
    """Run one service in the foreground (the same as `python -m services.<name>`)."""
    import runpy

    runpy.run_module(f"services.{name.value}", run_name="__main__", alter_sys=True)


BasePortOpt = Annotated[
    int | None,
    typer.Option(
        "--base-port",
        help="seven consecutive ports from N: transmitter, channel, receiver gRPC, their "
        "metrics, control (default: 50051-50053, 9101-9103, 8000)",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="RKDSC_TOKEN",
        help="API token for PUT/POST (default: a random one, written to the token file)",
        show_envvar=True,
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="link weights folder (default: the shipped weights)"),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="dataset source the transmitter streams runs from (default: RKDSC_DATA_DIR)",
    ),
]


def _ports(base_port: int | None) -> StackPorts:
    from services.stack import StackPorts

    try:
        return StackPorts.from_base(base_port) if base_port is not None else StackPorts()
    except ValueError as err:
        _fail(str(err))


def _print_endpoints(stack: Stack) -> None:
    typer.echo(f"rkdsc stack ready; logs in {stack.run_dir}/<service>.log")
    for name, where in stack.endpoints():
        typer.echo(f"  {name:<12} {where}")
    pids = ", ".join(f"{name} {proc.pid}" for name, proc in stack.processes.items())
    typer.echo(f"  pids: {pids}")
    if stack.token_file is not None:
        typer.echo(
            f"API token in {stack.token_file} (send 'Authorization: Bearer <token>' with PUT/POST)"
        )
    else:
        typer.echo("API token: the one given with --token / RKDSC_TOKEN")


def up_cmd(
    base_port: BasePortOpt = None,
    token: TokenOpt = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="where the generated token goes (default: $XDG_RUNTIME_DIR/rkdsc/control-token "
            "or ~/.cache/rkdsc/control-token; control-token-<port> for a control port other "
            "than 8000)",
        ),
    ] = None,
    weights: WeightsOpt = None,
    data: DataOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="logs and stack.json (default: runs/stack-<timestamp>)"),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="longest wait for /readyz [s]")
    ] = 120.0,
    grace: Annotated[
        float, typer.Option("--grace", help="shutdown grace before SIGKILL [s]")
    ] = 10.0,
    tls_dir: Annotated[
        Path | None,
        typer.Option("--tls-dir", help="mutual TLS on every gRPC link, with `rkdsc certs` files"),
    ] = None,
) -> None:
    """Start the four services on 127.0.0.1; Ctrl-C or SIGTERM stops them.

    Transmitter, channel emulator, receiver and control plane run as child processes; their
    output goes to <run dir>/<service>.log. Waits until /readyz answers, then prints the
    endpoints and where the API token is.
    """
    import signal

    from services.stack import Stack, StackCancelled, StackError

    _quiet_http_logs()
    if data is not None and not data.exists():
        _fail(f"--data {data} does not exist")
    ports = _ports(base_port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    # SIGHUP too: a closed terminal stops the stack rather than orphaning it (the services
    # run in their own sessions, so no signal reaches them but through here).
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in signals}
    code = 0
    try:
        try:
            stack = Stack.start(
                ports=ports,
                token=token,
                token_file=token_file,
                weights_dir=weights,
                data_dir=data,
                run_dir=run_dir,
                tls_dir=tls_dir,
                ready_timeout=ready_timeout,
                grace_seconds=grace,
                cancel=stop.is_set,
            )
        except StackCancelled:
            typer.echo("stopped before the stack was ready")
            return
        except (StackError, OSError) as err:
            _fail(str(err), 1)
        _print_endpoints(stack)
        typer.echo("Ctrl-C stops the stack.")
        try:
            while not stop.wait(0.5):
                dead = stack.exited()
                if dead:
                    name, rc = next(iter(dead.items()))
                    sys.stderr.write(
                        f"error: {name} exited with code {rc}; stopping the stack. "
                        f"The end of {stack.logs[name]}:\n{stack.log_tail(name)}\n"
                    )
                    code = 1
                    break
        finally:
            codes = stack.stop()
        typer.echo("stack stopped (" + ", ".join(f"{n} exit {c}" for n, c in codes.items()) + ")")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code:
        raise typer.Exit(code)


def _parse_snrs(values: list[str] | None) -> tuple[float, ...] | None:
    if not values:
        return None
    out = []
    for value in values:
        for part in re.split(r"[,\s]+", value.strip()):
            if part:
                try:
                    out.append(float(part))
                except ValueError:
                    _fail(f"--snr-db: {part!r} is not a number (use e.g. --snr-db=-4,0,4)")
    return tuple(out)


def _api_token(token: str | None, port: int) -> str | None:
    from services.control.settings import default_token_file

    for candidate in (token, os.environ.get("RKDSC_CONTROL_TOKEN")):
        if candidate:
            return candidate
    try:
        return default_token_file(port).read_text().strip() or None
    except OSError:
        return None


def _demo_data(data: Path | None) -> Path:
    source = data
    for var in ("RKDSC_TRANSMITTER_DATA_DIR", "RKDSC_DATA_DIR"):
        if source is None and os.environ.get(var):
            source = Path(os.environ[var])
    if source is None:
        _fail(
            "the demo streams the CIFAR-10 test split and no dataset is set: pass --data PATH or "
            "set RKDSC_DATA_DIR=PATH (an image-folder tree or its .tar.gz, or the official "
            "CIFAR-10 binaries; `rkdsc data prepare --data PATH` checks a source)"
        )
    if not source.exists():
        _fail(f"the dataset source {source} does not exist (from --data or RKDSC_DATA_DIR)")
    return source


def demo_cmd(
    snr_db: Annotated[
        list[str] | None,
        typer.Option(
            "--snr-db",
            help="channel SNRs in dB, comma-separated or repeated (default: -4,0,4,8,12,16,20)",
        ),
    ] = None,
    images: Annotated[int, typer.Option("--images", min=1, help="test images per SNR")] = 200,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="awgn | rayleigh | rician (default: keep the emulator's)"),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="fixed | adaptive (default: keep the transmitter's)"),
    ] = None,
    length: Annotated[
        int | None, typer.Option("--length", min=1, help="L for the fixed policy")
    ] = None,
    target_accuracy: Annotated[
        float | None,
        typer.Option("--target-accuracy", min=0.0, max=1.0, help="for the adaptive policy"),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(
            "--confidence",
            help="the adaptive policy's one-sided confidence that L reaches the target, in "
            "[0.5, 1); 0.5 = no margin (default: keep the transmitter's)",
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=0.0, help="images per second (0 = max)")
    ] = 0.0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="output folder (default: runs/demo-<timestamp>)"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    control_url: Annotated[
        str | None,
        typer.Option("--control-url", help="a running control plane (default: the local one)"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="RKDSC_TOKEN",
            help="API token of a running stack (default: RKDSC_CONTROL_TOKEN or the token file)",
            show_envvar=True,
        ),
    ] = None,
    base_port: BasePortOpt = None,
    weights: WeightsOpt = None,
    data: DataOpt = None,
    run_timeout: Annotated[
        float, typer.Option("--run-timeout", help="longest wait for one run [s]")
    ] = 600.0,
    warmup: Annotated[
        int,
        typer.Option(
            "--warmup",
            min=0,
            help="unrecorded images after each SNR change, so that the transmitter's SNR "
            "estimate settles before the measured run (0: none)",
        ),
    ] = 64,
) -> None:
    """Sweep the channel SNR through the link and tabulate accuracy and symbols per image.

    One test-split run per SNR; prints a table and writes demo.csv, demo.json and demo.png.
    Uses the stack running at the control URL, or starts one for the sweep.
    """
    from rkdsc_core.cli._common import echo_json
    from services.control.client import ControlClient, ControlError
    from services.control.demo import (
        DEFAULT_SNR_DB,
        DemoConfig,
        format_table,
        run_demo,
        write_outputs,
    )
    from services.stack import StackError

    try:
        config = DemoConfig(
            snr_db=_parse_snrs(snr_db) or DEFAULT_SNR_DB,
            images=images,
            channel=channel,
            policy=policy,
            length=length,
            target_accuracy=target_accuracy,
            confidence=confidence,
            rate=rate,
            run_timeout=run_timeout,
            warmup_images=warmup,
        )
    except ValueError as err:
        _fail(str(err))
    _quiet_http_logs()
    out_dir = out if out is not None else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    ports = _ports(base_port)
    url = control_url or f"http://127.0.0.1:{ports.control}"

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    stack: Stack | None = None
    with ControlClient(url) as probe:
        running = probe.is_ready()
    if running:
        api_token = _api_token(token, urlsplit(url).port or ports.control)
        if api_token is None:
            _fail(
                f"a stack is running at {url} but no API token was found: pass --token, set "
                "RKDSC_TOKEN, or run the demo as the user who ran `rkdsc up`"
            )
        say(f"using the running stack at {url}")
    else:
        if control_url is not None:
            _fail(f"the control plane at {control_url} is not ready (GET /readyz)")
        stack = _start_demo_stack(ports, weights, _demo_data(data), out_dir, say)
        url, api_token = stack.control_url, stack.token
    try:
        with ControlClient(url, api_token) as client:
            result = run_demo(client, config, progress=say)
    except (ControlError, StackError) as err:
        _fail(str(err), 1)
    finally:
        if stack is not None:
            say("stopping the stack")
            stack.stop()
    paths = write_outputs(result, out_dir)
    if json_out:
        echo_json({**result.to_json(), "files": {k: str(v) for k, v in paths.items()}})
        return
    typer.echo(format_table(result.rows))
    typer.echo(f"wrote {paths['csv']}, {paths['json']} and {paths['png']}")


def _start_demo_stack(
    ports: StackPorts,
    weights: Path | None,
    data: Path,
    out_dir: Path,
    say: Callable[[str], None],
) -> Stack:
    from services.stack import Stack, StackError, StackPorts

    if ports == StackPorts() and ports.in_use():
        ports = StackPorts.free()
    run_dir = out_dir / "stack"
    say(f"no stack at http://127.0.0.1:{ports.control}: starting one (logs in {run_dir})")
    try:
        return Stack.start(
            ports=ports,
            weights_dir=weights,
            data_dir=data,
            run_dir=run_dir,
            token_file=run_dir / "control-token",
        )
    except (StackError, OSError) as err:
        _fail(str(err), 1)


def certs_cmd(
    out: Annotated[Path, typer.Option("--out", help="folder for the CA, keys and certificates")],
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--hosts", help="extra DNS names / IPs for every server certificate (repeatable)"
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="validity of every certificate")] = 365,
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """Write a private CA and certificates for mutual TLS between the services.

    ca.crt, <service>.crt/.key for transmitter, channel and receiver (localhost,
    127.0.0.1, ::1 and the compose names), client.crt/.key for the control plane; keys
    mode 0600. The CA key is not kept: rerun to rotate. Use with `rkdsc up --tls-dir DIR` or
    RKDSC_<SERVICE>_TLS__* (docs/security.md).
    """
    from services.certs import write_certs

    names = [h for value in hosts or [] for h in re.split(r"[,\s]+", value.strip()) if h]
    try:
        certs = write_certs(out, hosts=names, days=days, overwrite=force)
    except ValueError as err:
        _fail(str(err))
    except OSError as err:
        _fail(str(err), 1)
    typer.echo(f"wrote {certs.ca_file} and the certificates in {certs.folder} (valid {days} d)")
    typer.echo(f"start the stack with mutual TLS: rkdsc up --tls-dir {certs.folder}")


def bench_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="the same ratios, less precisely, in under a minute")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="also write the JSON report to this file")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="some of stack, channel, models, air, load (default: all)"),
    ] = None,
    weights: WeightsOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="CIFAR-10 source (default: RKDSC_DATA_DIR; none: synthetic images)"
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="torch threads per process, every side")
    ] = 1,
    show: Annotated[
        Path | None,
        typer.Option(
            "--show", help="print the table of a saved report (an --out JSON); measure nothing"
        ),
    ] = None,
) -> None:
    """Benchmark the link, each figure a ratio measured side by side in this run.

    The stack against the in-process pipeline (throughput, latency), the channel emulator's
    impairment rate against numpy noise, the student encoder against the teachers, bytes on
    the air against PNG/JPEG, and one stack under many runs and clients at once (throughput,
    fates, latency, memory). Progress goes to stderr. Exits 1 if a benchmark failed.
    """
    import json

    from rkdsc_core.cli._common import echo_json
    from rkdsc_core.config import load_settings
    from services.bench import BenchConfig, run_bench
    from services.bench.runner import format_report

    if show is not None:
        if json_out or quick or out or only or weights or data:
            _fail("--show prints a saved report and measures nothing: give it alone")
        try:
            typer.echo(format_report(json.loads(show.read_text())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            _fail(f"{show}: not a saved bench report: {err!r}")
        return

    names = [n for value in only or [] for n in re.split(r"[,\s]+", value.strip()) if n]
    try:
        config = BenchConfig.preset(
            quick=quick, only=names or None, weights_dir=weights, threads=threads
        )
    except ValueError as err:
        _fail(str(err))
    source = load_settings(overrides={"data.dir": data}).resolved_data()
    _quiet_http_logs()
    report = run_bench(
        config,
        data_dir=source.dir,
        cache_dir=source.cache_dir,
        progress=lambda msg: typer.echo(msg, err=True),
    )
    doc = report.to_json()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
    if json_out:
        echo_json(doc)
    else:
        typer.echo(format_report(report))
    if report.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``up``, ``demo``, ``serve``, ``certs`` and ``bench`` to the ``rkdsc`` app (once)."""
    have = {c.name for c in app.registered_commands}
    for name, fn in (
        ("up", up_cmd),
        ("demo", demo_cmd),
        ("serve", serve_cmd),
        ("certs", certs_cmd),
        ("bench", bench_cmd),
    ):
        if name not in have:
            app.command(name)(fn)
