"""Measure a link's accuracy per channel model, L and SNR on a test split (an EvalTable)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rkdsc_core.channel import Channel, ChannelConfig, frame_generators
from rkdsc_core.data import BatchLoader, ImageDataset
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
    pipeline.eval()
    subset = data.sample(min(limit, len(data)), seed=seed)
    tokens, labels = [], []
    for x, y in BatchLoader(subset, batch_size):
        tokens.append(pipeline.student.forward_tokens(x))
        labels.append(y)
    lens = list(lengths or pipeline.lengths)
    acc: dict[str, dict[int, tuple[float, ...]]] = {}
    for model in channels:
        channel = Channel(ChannelConfig(model=model))  # type: ignore[arg-type]
        acc[model] = {}
        for n in lens:
            row = []
            for snr in snr_db:
                correct = seen = 0
                for t, y in zip(tokens, labels, strict=True):
                    gens = frame_generators(seed, "eval", range(seen, seen + len(y)))
                    tx = pipeline.transmit_tokens(t, snr, n)
                    out = pipeline.apply_channel(channel, tx, snr, generator=gens)
                    logits, _ = pipeline.receive(
                        out.y, out.received, pipeline.estimate(knowledge, out)
                    )
                    correct += int((logits.argmax(1) == y).sum())
                    seen += len(y)
                row.append(correct / max(1, seen))
            acc[model][n] = tuple(row)
    meta = {
        "dataset": data.name,
        "split": data.split,
        "source_sha256": data.source_sha256,
        "images": len(subset),
        "knowledge": knowledge,
        "seed": seed,
    }
    return EvalTable(tuple(float(s) for s in snr_db), acc, meta)
