"""The benchmark suite (``rkdsc bench``): run the five benchmarks, collect a report, tabulate.

Every figure is a ratio of two measurements made side by side in the same run on the same
machine; the report records the machine and its load average, so a run under background
load is recognisable. Targets are reported, never asserted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rkdsc_core.checkpoint import machine_info
from services.bench._common import Figure
from services.bench._images import BenchImages, load_images
from services.bench.air import AirBenchConfig, AirBenchResult, run_air_bench
from services.bench.channel import ChannelBenchConfig, ChannelBenchResult, run_channel_bench
from services.bench.load import LoadBenchConfig, LoadBenchResult, load_env, run_load_bench
from services.bench.models import ModelsBenchConfig, ModelsBenchResult, run_models_bench
from services.bench.stack import StackBenchConfig, StackBenchResult, run_stack_bench, stack_env

__all__ = [
    "BENCHMARKS",
    "BenchConfig",
    "BenchReport",
    "format_report",
    "format_table",
    "run_bench",
]

log = logging.getLogger(__name__)

BENCHMARKS = ("stack", "channel", "models", "air", "load")
"""The benchmarks, in the order they run."""


@dataclass(frozen=True)
class BenchConfig:
    """The whole suite: one config per benchmark, which of them to run, how many images.

    Use :meth:`preset` for the full run or ``--quick``.
    """

    stack: StackBenchConfig = field(default_factory=StackBenchConfig)
    channel: ChannelBenchConfig = field(default_factory=ChannelBenchConfig)
    models: ModelsBenchConfig = field(default_factory=ModelsBenchConfig)
    air: AirBenchConfig = field(default_factory=AirBenchConfig)
    load: LoadBenchConfig = field(default_factory=LoadBenchConfig)
    only: tuple[str, ...] = BENCHMARKS
    images: int = 1000
    quick: bool = False

    def __post_init__(self) -> None:
        unknown = [b for b in self.only if b not in BENCHMARKS]
        if unknown or not self.only:
            raise ValueError(
                f"only must name some of {', '.join(BENCHMARKS)}; got {', '.join(self.only)}"
            )
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")

    @classmethod
    def preset(
        cls,
        *,
        quick: bool = False,
        only: Sequence[str] | None = None,
        weights_dir: Path | None = None,
        threads: int | None = 1,
    ) -> BenchConfig:
        """The full run (a few minutes on 2 cores) or the quick one (under a minute): the
        same measurements and ratios, fewer images and shorter timings (and the models
        timed at batch 1 and 16 rather than 1 and 64)."""
        if quick:
            stack = StackBenchConfig(images=150, rounds=1, warmup=10, single_images=30)
            channel = ChannelBenchConfig(seconds=0.6, sweep_seconds=0.2)
            # CLIP ViT-B/32 takes seconds per batch of 64 on one thread: batch 16 instead.
            models = ModelsBenchConfig(batches=(1, 16), seconds=0.3, rounds=1)
            air = AirBenchConfig(images=200)
            load = LoadBenchConfig(
                links=3, run_images=100, streams=3, stream_images=50, warmup=10, baseline_images=50
            )
            images = 200
        else:
            stack = StackBenchConfig(images=1000, rounds=2, warmup=30, single_images=200)
            channel = ChannelBenchConfig(seconds=5.0, sweep_seconds=1.5)
            models = ModelsBenchConfig(batches=(1, 64), seconds=3.0, rounds=2)
            air = AirBenchConfig(images=1000)
            load = LoadBenchConfig(
                links=8, run_images=400, streams=8, stream_images=150, baseline_images=200
            )
            images = 1000
        return cls(
            stack=replace(stack, weights_dir=weights_dir, threads=threads),
            channel=replace(channel, weights_dir=weights_dir),
            models=replace(models, weights_dir=weights_dir, threads=threads),
            air=replace(air, weights_dir=weights_dir),
            load=replace(load, weights_dir=weights_dir, threads=threads),
            only=tuple(only) if only else BENCHMARKS,
            images=images,
            quick=quick,
        )


@dataclass
class BenchReport:
    """What one run measured. ``None`` for a benchmark not run or failed (see ``errors``)."""

    config: BenchConfig
    machine: dict[str, Any]
    images_source: str
    synthetic_images: bool
    started: str
    seconds: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)
    stack: StackBenchResult | None = None
    channel: ChannelBenchResult | None = None
    models: ModelsBenchResult | None = None
    air: AirBenchResult | None = None
    load: LoadBenchResult | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def figures(self) -> list[tuple[str, Figure]]:
        """(benchmark, figure) for every figure measured, in suite order."""
        out: list[tuple[str, Figure]] = []
        for name in BENCHMARKS:
            result = getattr(self, name)
            if result is not None:
                out += [(name, f) for f in result.figures()]
        return out

    def to_json(self) -> dict[str, Any]:
        config = asdict(self.config)
        for name in BENCHMARKS:
            wd = config[name].get("weights_dir")
            config[name]["weights_dir"] = None if wd is None else str(wd)
        return {
            "started": self.started,
            "seconds": self.seconds,
            "quick": self.config.quick,
            "machine": self.machine,
            "images": {"source": self.images_source, "synthetic": self.synthetic_images},
            "environment": self.environment,
            "config": config,
            "figures": [{"benchmark": b, **f.to_json()} for b, f in self.figures()],
            "results": {
                name: getattr(self, name).to_json()
                for name in BENCHMARKS
                if getattr(self, name) is not None
            },
            "errors": self.errors,
        }


_SECRET_WORDS = ("TOKEN", "SECRET", "PASS", "KEY", "AUTH", "CREDENTIAL", "PRIVATE")


def service_environment(env: Mapping[str, str], config: BenchConfig) -> dict[str, str]:
    """The ``RKDSC_*`` settings in ``env`` that the stacks' services inherit (e.g.
    ``RKDSC_TRANSMITTER_ENCODE_WORKERS``), sorted: not those the benchmarks set themselves
    (:func:`~services.bench.stack.stack_env`, :func:`~services.bench.load.load_env`), nor
    names with a secret-like word."""
    own = set(stack_env(config.stack, 1)) | set(load_env(config.load, Path()))
    return {
        k: v
        for k, v in sorted(env.items())
        if k.startswith("RKDSC_")
        and k not in own
        and not any(w in k.upper() for w in _SECRET_WORDS)
    }


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(figures: Sequence[tuple[str, Figure]]) -> str:
    """The figures as a Markdown table (readable as plain text too)."""
    lines = [
        "| figure | system | baseline | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for _, f in figures:
        target = "-"
        if f.target is not None:
            target = f">= {f.target:g}: " + ("met" if f.met else "**missed**")
        elif f.goal:
            target = f"{f.goal}: " + ("met" if f.met else "**missed**")
        lines.append(
            f"| {f.name} [{f.unit}] | {_num(f.system)} ({f.system_label}) "
            f"| {_num(f.baseline)} ({f.baseline_label}) | {f.ratio:.3g} ({f.ratio_of}) "
            f"| {target} |"
        )
    return "\n".join(lines)


def format_report(report: BenchReport | dict[str, Any]) -> str:
    """A header (machine, load, images, duration, when), the table, and any failures: of a
    report, or of one saved as JSON (:meth:`BenchReport.to_json`, ``rkdsc bench --out``).

    Raises:
        KeyError, TypeError, ValueError: a dict that is not a saved report.
    """
    doc = report.to_json() if isinstance(report, BenchReport) else report
    m = doc["machine"]
    figures = [(f["benchmark"], Figure.from_json(f)) for f in doc["figures"]]
    kind = "quick" if doc["quick"] else "full"
    lines = [
        f"rkdsc bench ({kind} run, {doc['seconds']:.0f} s, started {doc['started']}): "
        f"{m['logical_cpus']} logical CPUs, {m['arch']} {m['cpu']}, load average "
        f"{m['loadavg_1m']} at the start, {m.get('loadavg_1m_end')} at the end",
        f"images: {doc['images']['source']}",
        *([f"environment: {env}"] if (env := doc.get("environment")) else []),
        "",
        format_table(figures),
    ]
    lines += [f"FAILED {name}: {err}" for name, err in doc["errors"].items()]
    return "\n".join(lines)


def run_bench(
    config: BenchConfig,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    images: BenchImages | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the selected benchmarks in turn; a failing one is recorded in ``errors`` and the
    others still run.

    Args:
        data_dir: the CIFAR-10 source (``None``: synthetic images, labelled as such); the
            load benchmark's runs stream it too.
        cache_dir: the decoded-dataset cache (also the load benchmark's transmitter's).
        images: use these images instead of loading them.
        progress: called with one line per step.
    """
    say = progress or (lambda _msg: None)
    machine = machine_info()
    start = time.perf_counter()
    if images is None:
        images = load_images(config.images, source=data_dir, cache_dir=cache_dir)
    say(f"images: {images.source}")
    report = BenchReport(
        config=config,
        machine=machine,
        images_source=images.source,
        synthetic_images=images.synthetic,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=service_environment(os.environ, config),
    )
    runners: dict[str, Callable[[], Any]] = {
        "stack": lambda: run_stack_bench(config.stack, images, progress=say),
        "channel": lambda: run_channel_bench(config.channel, progress=say),
        "models": lambda: run_models_bench(config.models, progress=say),
        "air": lambda: run_air_bench(config.air, images, progress=say),
        "load": lambda: run_load_bench(
            config.load, images, data_dir=data_dir, cache_dir=cache_dir, progress=say
        ),
    }
    for name in BENCHMARKS:
        if name not in config.only:
            continue
        try:
            setattr(report, name, runners[name]())
        except Exception as err:  # one broken benchmark must not hide the others
            log.exception("benchmark %s failed", name)
            report.errors[name] = f"{type(err).__name__}: {err}"
    report.seconds = time.perf_counter() - start
    report.machine["loadavg_1m_end"] = machine_info()["loadavg_1m"]
    return report
