"""Benchmark: cold decode and warm cache load of a dataset split (CIFAR-10 train by default).

Usage::

    RKDSC_DATA_DIR=/work/shared/datasets/cifar10 python bench/bench_data.py
    python bench/bench_data.py /path/to/cifar10-jpeg.tar.gz --repeat 5

Prints one JSON object: seconds for the cold decode (into a fresh temporary cache unless
``--cache-dir`` is given), the warm loads (median/min), and one loader epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rkdsc_core.checkpoint import machine_info
from rkdsc_core.config import load_settings
from rkdsc_core.data import BatchLoader, load_dataset
from rkdsc_core.data.cache import cache_path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON report to stdout."""
    parser = argparse.ArgumentParser(description="Time cold decode and warm cache load.")
    parser.add_argument("source", nargs="?", type=Path, help="default: RKDSC_DATA_DIR")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--cache-dir", type=Path, help="default: a fresh temporary folder")
    parser.add_argument("--repeat", type=int, default=5, help="warm loads to time")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    source = load_settings(overrides={"data.dir": args.source}).resolved_data().dir
    with tempfile.TemporaryDirectory(prefix="rkdsc-bench-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)

        start = time.perf_counter()
        ds = load_dataset(args.dataset, args.split, source=source, cache_dir=cache_dir)
        cold_s = time.perf_counter() - start

        warm: list[float] = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            ds = load_dataset(args.dataset, args.split, source=source, cache_dir=cache_dir)
            warm.append(time.perf_counter() - start)

        loader = BatchLoader(ds, args.batch_size, shuffle=True, augment=True, seed=0)
        start = time.perf_counter()
        seen = sum(len(labels) for _, labels in loader)
        epoch_s = time.perf_counter() - start

        report = {
            "dataset": args.dataset,
            "split": args.split,
            "source": str(source),
            "source_sha256": ds.source_sha256,
            "cache": str(cache_path(cache_dir, ds.name, ds.source_sha256)),
            "images": list(ds.images.shape),
            "cold_decode_s": round(cold_s, 3),
            "warm_load_median_s": round(statistics.median(warm), 4),
            "warm_load_min_s": round(min(warm), 4),
            "warm_load_under_2s": statistics.median(warm) < 2.0,
            "epoch_s": round(epoch_s, 3),
            "epoch_images": seen,
            "batch_size": args.batch_size,
            "machine": machine_info(),
        }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
