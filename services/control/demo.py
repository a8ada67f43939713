"""The demo sweep: one run per SNR through the control plane; table, CSV, JSON and plot."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rkdsc_core.checkpoint import git_commit, machine_info
from rkdsc_core.cli._common import command_line
from services.control.client import ControlClient, ControlError

__all__ = ["DemoConfig", "DemoResult", "DemoRow", "format_table", "run_demo", "write_outputs"]

DEFAULT_SNR_DB = (-4.0, 0.0, 4.0, 8.0, 12.0, 16.0, 20.0)
"""The SNRs the demo sweeps by default, Es/N0 [dB]."""


@dataclass(frozen=True)
class DemoConfig:
    """What to sweep.

    Attributes:
        snr_db: the channel SNRs, Es/N0 [dB], one run each.
        images: test images per run.
        channel: channel model to set (``None`` = keep the emulator's).
        policy: ``fixed``/``adaptive`` (``None`` = keep the transmitter's).
        length: L for the fixed policy (``None`` = keep).
        target_accuracy: for the adaptive policy (``None`` = keep).
        confidence: the adaptive policy's margin, in [0.5, 1), 0.5 = none (``None`` = keep).
        rate: images per second (0 = as fast as possible).
        run_timeout: longest wait for one run [s].
        warmup_images: images run, and not recorded, after each SNR change and before the
            measured run: the transmitter conditions the encoder (and the adaptive policy
            picks L) on an average of the receiver's SNR reports, which lags a change by
            the frames in flight (32 a link by default) plus ~20 reports to settle; the
            default 64 covers both. 0: none (the first frames then use the previous SNR).
    """

    snr_db: tuple[float, ...] = DEFAULT_SNR_DB
    images: int = 200
    channel: str | None = None
    policy: str | None = None
    length: int | None = None
    target_accuracy: float | None = None
    confidence: float | None = None
    rate: float = 0.0
    run_timeout: float = 600.0
    warmup_images: int = 64

    def __post_init__(self) -> None:
        if not self.snr_db:
            raise ValueError("snr_db: give at least one SNR")
        bad = [s for s in self.snr_db if not -30.0 <= s <= 60.0]  # the channel's range
        if bad:
            raise ValueError(f"snr_db: {bad} outside the channel's [-30, 60] dB")
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")
        if self.warmup_images < 0:
            raise ValueError(f"warmup_images must be >= 0, got {self.warmup_images}")
        if self.channel not in (None, "awgn", "rayleigh", "rician"):
            raise ValueError(f"channel must be awgn, rayleigh or rician; got {self.channel!r}")
        if self.policy not in (None, "fixed", "adaptive"):
            raise ValueError(f"policy must be fixed or adaptive; got {self.policy!r}")
        if self.confidence is not None and not 0.5 <= self.confidence < 1.0:
            raise ValueError(
                f"confidence must lie in [0.5, 1) (0.5 = no margin); got {self.confidence}"
            )


@dataclass(frozen=True)
class DemoRow:
    """One SNR point."""

    snr_db: float
    accuracy: float
    symbols_per_image: float
    latency_ms: float | None
    predicted: int
    lost: int
    errors: int
    run_id: str


@dataclass
class DemoResult:
    """The sweep: rows, the settings it ran under and the full run reports."""

    config: DemoConfig
    control_url: str
    rows: list[DemoRow] = field(default_factory=list)
    channel: dict[str, Any] = field(default_factory=dict)
    transmitter: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    """``command``, ``git_commit`` and ``machine`` (where the demo client ran: the stack's
    machine when it started the stack or talks to one on 127.0.0.1), set at the end."""

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "control_url": self.control_url,
            **self.provenance,
            "channel": self.channel,
            "transmitter": self.transmitter,
            "rows": [asdict(r) for r in self.rows],
            "runs": self.runs,
        }


def run_demo(
    client: ControlClient,
    config: DemoConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """For each SNR: set the channel, run ``warmup_images`` unrecorded, then ``images``
    test images, wait, record the result.

    Raises:
        ControlError: a refused update, a channel that reports another SNR than the one set,
            a failed run, a run with no prediction, or a run that did not finish in time.
    """
    say = progress or (lambda _msg: None)
    result = DemoResult(config=config, control_url=client.base_url)
    policy = {
        k: v
        for k, v in {
            "length_policy": config.policy,
            "fixed_length": config.length,
            "target_accuracy": config.target_accuracy,
            "confidence": config.confidence,
        }.items()
        if v is not None
    }
    result.transmitter = client.update_transmitter(**policy) if policy else client.get_transmitter()
    say(f"transmitter policy: {_policy_text(result.transmitter)}")
    for snr in config.snr_db:
        changes: dict[str, Any] = {"snr_db": snr}
        if config.channel is not None:
            changes["model"] = config.channel
        result.channel = client.update_channel(**changes)
        applied = float(result.channel.get("snr_db", math.nan))
        if not math.isclose(applied, snr, abs_tol=1e-3):  # held as float32 by the emulator
            raise ControlError(f"the channel reports {applied:g} dB after setting {snr:g} dB")
        if config.warmup_images:
            warm = client.start_run(split="test", num_images=config.warmup_images)
            say(f"SNR {snr:g} dB: warm-up run {warm['run_id']} ({config.warmup_images} images)")
            _finished(client.wait_run(warm["run_id"], timeout=config.run_timeout), snr)
        run = client.start_run(split="test", num_images=config.images, rate=config.rate)
        say(f"SNR {snr:g} dB: run {run['run_id']} ({config.images} images)")
        run = _finished(client.wait_run(run["run_id"], timeout=config.run_timeout), snr)
        latency = run.get("mean_end_to_end_seconds")
        result.runs.append(run)
        result.rows.append(
            DemoRow(
                snr_db=snr,
                accuracy=float(run["accuracy"]),
                symbols_per_image=float(run["symbols_per_image"]),
                latency_ms=None if latency is None else 1000.0 * float(latency),
                predicted=int(run["fates"]["predicted"]),
                lost=int(run["fates"]["lost"]),
                errors=int(run["fates"]["error"]),
                run_id=str(run["run_id"]),
            )
        )
    result.provenance = {
        "command": command_line(),
        "git_commit": git_commit(),
        "machine": machine_info(),  # its load average says whether other work shared it
    }
    return result


def _finished(run: dict[str, Any], snr: float) -> dict[str, Any]:
    """``run``, or ControlError when it failed or predicted nothing (no accuracy to show)."""
    if run["state"] != "done":
        raise ControlError(
            f"run {run['run_id']} at {snr:g} dB {run['state']}: {run.get('error') or '?'}"
        )
    if int(run["fates"]["predicted"]) == 0:
        raise ControlError(
            f"run {run['run_id']} at {snr:g} dB predicted no image ({run['fates']}): no accuracy"
        )
    return run


def _policy_text(policy: dict[str, Any]) -> str:
    if policy.get("length_policy") == "adaptive":
        return (
            f"adaptive, target accuracy {policy.get('target_accuracy')} "
            f"(confidence {policy.get('confidence')})"
        )
    return f"{policy.get('length_policy')}, L = {policy.get('fixed_length')}"


_COLUMNS = ("snr_db", "accuracy", "symbols/image", "latency ms", "lost", "errors")


def format_table(rows: Sequence[DemoRow]) -> str:
    """The rows as an aligned text table."""
    lines = [
        (
            f"{r.snr_db:g}",
            f"{r.accuracy:.3f}",
            f"{r.symbols_per_image:.1f}",
            "n/a" if r.latency_ms is None else f"{r.latency_ms:.1f}",
            str(r.lost),
            str(r.errors),
        )
        for r in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(_COLUMNS)]
    out = ["  ".join(c.rjust(w) for c, w in zip(_COLUMNS, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def write_outputs(result: DemoResult, out_dir: Path) -> dict[str, Path]:
    """Write ``demo.csv``, ``demo.json`` and ``demo.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "demo.csv",
        "json": out_dir / "demo.json",
        "png": out_dir / "demo.png",
    }
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(DemoRow.__dataclass_fields__))
        writer.writeheader()
        for row in result.rows:
            writer.writerow(asdict(row))
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    _plot(result, paths["png"])
    return paths


def _plot(result: DemoResult, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    snr = [r.snr_db for r in result.rows]
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    acc_ax, sym_ax = fig.subplots(2, 1, sharex=True)
    acc_ax.plot(snr, [r.accuracy for r in result.rows], "o-")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1)
    acc_ax.grid(True, alpha=0.3)
    sym_ax.plot(snr, [r.symbols_per_image for r in result.rows], "s-", color="tab:orange")
    sym_ax.set_ylabel("symbols per image")
    sym_ax.set_xlabel("channel SNR, Es/N0 [dB]")
    sym_ax.grid(True, alpha=0.3)
    top = max((r.symbols_per_image for r in result.rows), default=1.0)
    sym_ax.set_ylim(0, top * 1.15 if math.isfinite(top) and top > 0 else 1.0)
    channel = result.channel.get("model", "?")
    fig.suptitle(
        f"RKD-SC over {channel}: {result.config.images} test images per SNR, "
        f"policy {_policy_text(result.transmitter)}",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)
