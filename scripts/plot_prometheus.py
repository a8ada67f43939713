"""Figures from a Prometheus that scraped an rkdsc stack: accuracy vs SNR, accuracy per SNR bin
over time, and per-stage latency p50/p99 (PNG, for the README), plus the raw series (JSON).

Reads the recording rules of deploy/prometheus/rules.yml, so point it at a Prometheus that
loads them (the compose one, or prometheus.local.yml next to `rkdsc up`).

    python scripts/plot_prometheus.py --url http://127.0.0.1:9090 --since 30m --out runs/figures
    python scripts/plot_prometheus.py --start 2026-01-01T10:00:00Z --end 2026-01-01T10:30:00Z
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_dashboard import ACCURACY_VS_SNR

__all__ = ["ACCURACY_PER_SNR", "LATENCY", "main", "parse_time", "query", "query_range"]

log = logging.getLogger("plot_prometheus")

ACCURACY_PER_SNR = "snr_db_bin:rkdsc_receiver_accuracy:ratio_rate1m"
"""Accuracy over the last minute per 2 dB SNR bin (recording rule)."""

LATENCY = {
    "p50": "job_stage:rkdsc_latency_seconds:p50_rate1m",
    "p99": "job_stage:rkdsc_latency_seconds:p99_rate1m",
}
"""Per-stage latency quantiles [s] (recording rules; label ``stage``)."""

STAGES = ("encode", "channel", "decode", "end_to_end")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` in seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"a duration such as 30s, 15m, 2h or 1d, got {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_time(text: str) -> float:
    """A Unix timestamp [s] or an RFC 3339 time (``2026-01-01T10:00:00Z``) as Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as err:
        raise ValueError(f"a Unix time or an RFC 3339 time, got {text!r}") from err


def _get(url: str, path: str, params: dict[str, str], timeout: float) -> Any:
    full = f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(full, timeout=timeout) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params.get('query')!r}: {body.get('error', body)}")
    return body["data"]["result"]


def query(url: str, expr: str, at: float, timeout: float = 30.0) -> list[dict[str, Any]]:
    """``/api/v1/query`` at time ``at``: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
    return list(_get(url, "/api/v1/query", {"query": expr, "time": f"{at:.3f}"}, timeout))


def query_range(
    url: str, expr: str, start: float, end: float, step: float, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """``/api/v1/query_range``: ``[{"metric": {...}, "values": [[t, "v"], ...]}, ...]``."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}s"}
    return list(_get(url, "/api/v1/query_range", params, timeout))


def _floats(values: list[list[Any]]) -> tuple[np.ndarray[Any, Any], list[float]]:
    """Times (datetime64, local time as matplotlib draws them) and values of a range result."""
    ts = np.array([datetime.fromtimestamp(float(t)) for t, _v in values], dtype="datetime64[ms]")
    return ts, [float(v) for _t, v in values]


def _marker(ts: np.ndarray[Any, Any]) -> str | None:
    """Dots on short series, which a line alone would not show (one point)."""
    return "." if len(ts) < 30 else None


def _bin_key(label: str) -> float:
    try:
        return float(label)
    except ValueError:
        return math.inf


def plot_accuracy_vs_snr(result: list[dict[str, Any]], path: Path) -> None:
    points = sorted(
        (_bin_key(r["metric"].get("snr_db_bin", "")), float(r["value"][1])) for r in result
    )
    points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o")
    else:
        ax.text(0.5, 0.5, "no labelled predictions in range", ha="center", transform=ax.transAxes)
    ax.set_xlabel("channel SNR, 2 dB bin centre [dB]")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.set_title("Accuracy vs SNR")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_per_snr(result: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in sorted(result, key=lambda r: _bin_key(r["metric"].get("snr_db_bin", ""))):
        ts, ys = _floats(r["values"])
        ax.plot(ts, ys, marker=_marker(ts), label=f"{r['metric'].get('snr_db_bin', '?')} dB")
    ax.set_ylabel("accuracy (1 min)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    if result:
        ax.legend(fontsize="small", ncol=2)
    ax.set_title("Accuracy per SNR bin over time")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    colours = dict(zip(STAGES, ("C0", "C1", "C2", "C3"), strict=True))
    for quantile, style in (("p50", "-"), ("p99", "--")):
        for r in results.get(quantile, []):
            stage = r["metric"].get("stage", "?")
            ts, ys = _floats(r["values"])
            colour = colours.get(stage, "C7")
            label = f"{stage} {quantile}"
            ax.plot(ts, ys, style, marker=_marker(ts), color=colour, label=label)
    ax.set_ylabel("latency [s]")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if any(results.values()):
        ax.legend(fontsize="small", ncol=2)
    ax.set_title("Latency per stage (1 min window)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--since", default="30m", help="range ending now (if no --start)")
    parser.add_argument("--start", help="range start: Unix time or RFC 3339")
    parser.add_argument("--end", help="range end (default: now)")
    parser.add_argument("--step", default=None, help="resolution, e.g. 5s (default: ~300 points)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "figures", help="PNG folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        end = parse_time(args.end) if args.end else time.time()
        start = parse_time(args.start) if args.start else end - parse_duration(args.since)
        step = parse_duration(args.step) if args.step else max(1.0, (end - start) / 300)
    except ValueError as err:
        parser.error(str(err))
    if end <= start:
        parser.error(f"the range is empty: start {start} >= end {end}")
    window = f"{max(1, round(end - start))}s"
    args.out.mkdir(parents=True, exist_ok=True)

    data: dict[str, Any] = {"url": args.url, "start": start, "end": end, "step": step}
    data["accuracy_vs_snr"] = query(args.url, ACCURACY_VS_SNR.replace("$__range", window), at=end)
    data["accuracy_per_snr"] = query_range(args.url, ACCURACY_PER_SNR, start, end, step)
    data["latency"] = {q: query_range(args.url, e, start, end, step) for q, e in LATENCY.items()}

    plot_accuracy_vs_snr(data["accuracy_vs_snr"], args.out / "accuracy_vs_snr.png")
    plot_accuracy_per_snr(data["accuracy_per_snr"], args.out / "accuracy_per_snr.png")
    plot_latency(data["latency"], args.out / "latency.png")
    (args.out / "prometheus.json").write_text(json.dumps(data, indent=1) + "\n")
    log.info("wrote accuracy_vs_snr.png, accuracy_per_snr.png, latency.png, prometheus.json")
    log.info("in %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
