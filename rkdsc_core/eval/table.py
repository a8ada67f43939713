"""Measure a link's accuracy per channel model, L and SNR on a test split (an EvalTable)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rkdsc_core.data import ImageDataset
from rkdsc_core.eval.sweep import accuracy_grid, check_heads, hit_rates, student_tokens
from rkdsc_core.link.eval_table import EvalTable
from rkdsc_core.link.pipeline import SemanticPipeline

__all__ = ["DEFAULT_SNRS", "measure_eval_table"]

DEFAULT_SNRS = tuple(float(s) for s in range(-10, 25, 2))
"""-10 .. 24 dB in steps of 2 (Es/N0)."""


@torch.no_grad()
def measure_eval_table(
    pipeline: SemanticPipeline,
    data: ImageDataset,
    *,
    channels: Sequence[str] = ("awgn", "rayleigh"),
    snr_db: Sequence[float] = DEFAULT_SNRS,
    lengths: Sequence[int] | None = None,
    knowledge: str = "pilot",
    limit: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
) -> EvalTable:
    """Accuracy of ``pipeline`` on ``data.sample(limit, seed=seed)``.

    Image ``i`` is impaired with ``frame_generator(seed, "eval", i)`` at every point, so all
    points (and all links measured with the same seed) see the same noise per image.
    The student's feature tokens are computed once per image.
    """
    check_heads({"link": pipeline}, data)
    subset = data.sample(min(limit, len(data)), seed=seed)
    tokens, labels = student_tokens(pipeline, subset, batch_size)
    lens = list(lengths or pipeline.lengths)
    grid = accuracy_grid(
        pipeline, tokens, labels, channels=channels, knowledge=(knowledge,), lengths=lens,
        snr_db=snr_db, seed=seed, desc="eval table",
    )  # fmt: skip
    acc: dict[str, dict[int, tuple[float, ...]]] = {
        model: {n: hit_rates(grid[(model, knowledge, n)]) for n in lens} for model in channels
    }
    meta = {
        "dataset": data.name,
        "split": data.split,
        "source_sha256": data.source_sha256,
        "images": len(subset),
        "knowledge": knowledge,
        "seed": seed,
    }
    return EvalTable(tuple(float(s) for s in snr_db), acc, meta)
