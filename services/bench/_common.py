"""Shared by the benchmarks: figures, latency statistics, thread pinning, CPU time, memory,
machine."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Figure",
    "LatencyStats",
    "process_cpu_seconds",
    "process_rss_bytes",
    "rate",
    "timed",
    "torch_threads",
]


@dataclass(frozen=True)
class Figure:
    """One row of the summary table: a measured figure against its side-by-side baseline.

    Attributes:
        name: what is compared (``stack throughput``).
        unit: unit of ``system`` and ``baseline`` (``images/s``).
        system: the figure of the part under test.
        baseline: the figure of the reference, measured in the same run.
        ratio: the stated ratio of the two (see ``ratio_of``).
        ratio_of: how ``ratio`` is formed, ``system/baseline`` or ``baseline/system``.
        target: the ratio aimed for (``None``: reported only).
        system_label: what ``system`` is.
        baseline_label: what ``baseline`` is.
        goal: a target that is not a ratio, in words (``growth < 100 MiB``), judged by the
            benchmark; at most one of ``target`` and ``goal``.
        goal_met: whether ``goal`` is met (given with ``goal``, else ``None``).
    """

    name: str
    unit: str
    system: float
    baseline: float
    ratio_of: str = "system/baseline"
    target: float | None = None
    system_label: str = ""
    baseline_label: str = ""
    goal: str = ""
    goal_met: bool | None = None

    def __post_init__(self) -> None:
        if bool(self.goal) != (self.goal_met is not None):
            raise ValueError(
                f"{self.name}: goal and goal_met go together; got goal={self.goal!r}, "
                f"goal_met={self.goal_met!r}"
            )
        if self.goal and self.target is not None:
            raise ValueError(f"{self.name}: give a ratio target or a goal, not both")
        if self.ratio_of not in ("system/baseline", "baseline/system"):
            raise ValueError(
                f"ratio_of must be 'system/baseline' or 'baseline/system', got {self.ratio_of!r}"
            )
        for name in ("system", "baseline"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{self.name}: {name} must be finite and > 0, got {value!r}")

    @property
    def ratio(self) -> float:
        if self.ratio_of == "system/baseline":
            return self.system / self.baseline
        return self.baseline / self.system

    @property
    def met(self) -> bool | None:
        """Whether ``ratio`` reaches ``target``, or whether ``goal`` is met (``None``
        without either)."""
        if self.target is not None:
            return self.ratio >= self.target
        return self.goal_met

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Figure:
        """Inverse of :meth:`to_json` (``ratio`` and ``met`` are derived again)."""
        return cls(**{k: v for k, v in doc.items() if k not in ("ratio", "met", "benchmark")})


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of per-image latencies [ms]."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        if not seconds:
            raise ValueError("latency statistics need at least one sample")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(
            count=len(ms),
            mean_ms=float(ms.mean()),
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            max_ms=float(ms.max()),
        )


def timed(
    fn: Callable[[], object], *, work: float, min_seconds: float, min_calls: int = 3
) -> tuple[float, float]:
    """Call ``fn`` (``work`` units each) for at least ``min_seconds`` and ``min_calls`` calls,
    after one untimed call; returns (units done, seconds)."""
    fn()
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return calls * work, elapsed


def rate(fn: Callable[[], object], *, work: float, min_seconds: float, min_calls: int = 3) -> float:
    """Units per second of :func:`timed`."""
    done, seconds = timed(fn, work=work, min_seconds=min_seconds, min_calls=min_calls)
    return done / seconds


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (``None``: leave as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads) [s]; ``None`` where
    ``/proc`` cannot tell (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat.rsplit(")", 1)[-1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def process_rss_bytes(pid: int) -> int | None:
    """Resident set size of process ``pid`` (``VmRSS`` in ``/proc/<pid>/status``) [bytes];
    ``None`` where ``/proc`` cannot tell (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None
