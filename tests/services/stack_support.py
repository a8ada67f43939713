"""Helpers for the tests that start real stacks: a tiny dataset, weights with an eval table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.link import EvalTable
from services.certs import CertSet
from services.stack import Stack, StackPorts

QUIET_ENV = {
    "OMP_NUM_THREADS": "1",
    "RKDSC_TRANSMITTER_TORCH_THREADS": "1",
    "RKDSC_RECEIVER_TORCH_THREADS": "1",
}
"""Two CPU cores run three torch processes: keep each to one thread."""


def write_tiny_dataset(root: Path, per_class: int = 1, seed: int = 0) -> Path:
    """An image-folder tree ``root/test/<cifar10 class>/<i>.png`` of random 32x32 images."""
    rng = np.random.default_rng(seed)
    for name in CIFAR10_CLASSES:
        folder = root / "test" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def with_eval_table(tiny_weights: Path, dest: Path) -> Path:
    """A copy of the tiny link's weights plus an eval table for the adaptive policy."""
    shutil.copytree(tiny_weights, dest)
    snr = (0.0, 10.0, 20.0)
    table = EvalTable(
        snr_db=snr,
        accuracy={
            "awgn": {
                8: (0.2, 0.4, 0.5),
                16: (0.3, 0.6, 0.7),
                32: (0.4, 0.7, 0.8),
                64: (0.5, 0.75, 0.85),
            }
        },
        meta={"note": "made up for the stack test", "images": 1000},
    )
    table.save(dest / "eval_table.json")
    return dest


def unstarted_stack(run_dir: Path, tls: CertSet | None = None) -> Stack:
    """A :class:`Stack` that starts nothing: for checking how it wires its children."""
    return Stack(
        host="127.0.0.1",
        ports=StackPorts(),
        run_dir=run_dir,
        token="t",
        token_file=None,
        grace_seconds=1.0,
        tls=tls,
    )


def run_service_module(
    module: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m services.<module>`` with this environment less every ``RKDSC_*`` variable,
    plus ``env``: a service expected to exit at once (bad settings or weights)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RKDSC_")}
    return subprocess.run(
        [sys.executable, "-m", f"services.{module}"],
        env=clean | dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
