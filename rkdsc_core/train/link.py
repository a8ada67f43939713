"""Train the whole link end to end with the channel in the loop (cross-entropy only).

This is the "DeepJSCC-style" link of RKD-SC's comparison: the student and the CAT codec
are trained together through randomly drawn channels, SNRs, lengths and channel
knowledge, with no teacher. rkdsc ships such a link as the CE-only baseline
(``rkdsc_core/weights/ce-only``) beside the distilled default.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rkdsc_core.channel import Channel, ChannelConfig
from rkdsc_core.data import BatchLoader, ImageDataset, epoch_generator
from rkdsc_core.link.pipeline import SemanticPipeline
from rkdsc_core.models import Backbone, create_model
from rkdsc_core.models.cat import CATCodec
from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    broadcast_buffers,
    current_dist,
    train_loader,
    wrap_ddp,
)
from rkdsc_core.train.loop import EpochLoop, device_sums
from rkdsc_core.train.memory_format import training_memory_format

__all__ = [
    "LinkTrainConfig",
    "build_pipeline",
    "channel_generator",
    "draw_conditions",
    "evaluate_clean_channel",
    "lr_at",
    "train_link",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkTrainConfig:
    """How :func:`train_link` trains (saved with every checkpoint)."""

    student: str = "darts-student"
    student_overrides: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"C": 16, "layers": 5}
    )
    codec_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_pilots: int = 8
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    snr_db_range: tuple[float, float] = (-5.0, 20.0)
    channels: tuple[str, ...] = ("awgn", "rayleigh")
    knowledge: tuple[str, ...] = ("perfect", "pilot")
    seed: int = 0
    eval_images: int = 2000


def lr_at(step: int, total: int, cfg: LinkTrainConfig) -> float:
    """One-cycle-style schedule: linear warm-up, then cosine decay to 0."""
    warm = max(1, int(cfg.warmup_fraction * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def build_pipeline(cfg: LinkTrainConfig) -> SemanticPipeline:
    """A fresh student + CAT pipeline shaped by ``cfg``."""
    student = create_model(cfg.student, **cfg.student_overrides)
    if not isinstance(student, Backbone):
        raise TypeError(f"{cfg.student} is not a Backbone")
    codec = create_model(
        "cat-codec",
        **{"token_dim": student.token_dim, "num_tokens": student.num_tokens} | cfg.codec_overrides,
    )
    assert isinstance(codec, CATCodec)
    return SemanticPipeline(student, codec, num_pilots=cfg.num_pilots)


def draw_conditions(
    cfg: LinkTrainConfig, lengths: tuple[int, ...], batch: int, g: torch.Generator
) -> tuple[Channel, torch.Tensor, torch.Tensor, str]:
    """One batch's channel model and knowledge, and per-image SNR ``[batch]`` and ``L``.

    Uses ``cfg.channels``, ``cfg.knowledge`` and ``cfg.snr_db_range`` only.
    """
    model = cfg.channels[int(torch.randint(len(cfg.channels), (1,), generator=g))]
    knowledge = cfg.knowledge[int(torch.randint(len(cfg.knowledge), (1,), generator=g))]
    lo, hi = cfg.snr_db_range
    snr = lo + (hi - lo) * torch.rand(batch, generator=g)
    length = torch.tensor(lengths)[torch.randint(len(lengths), (batch,), generator=g)]
    return Channel(ChannelConfig(model=model)), snr, length, knowledge  # type: ignore[arg-type]


def channel_generator(seed: int, epoch: int, info: DistInfo) -> torch.Generator:
    """The generator of an epoch's channel draws (:func:`draw_conditions` and the noise).

    Rank 0 keeps the single-process stream, so one process draws as it always has; every
    other rank draws its own.
    """
    if info.rank == 0:
        return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return epoch_generator(seed, epoch, 2, info.rank)


@torch.no_grad()
def evaluate_clean_channel(
    pipeline: SemanticPipeline,
    data: ImageDataset,
    *,
    snr_db: float = 20.0,
    limit: int = 2000,
    dist: DistInfo | None = None,
) -> float:
    """Accuracy over AWGN at ``snr_db`` with all ``l_max`` symbols and pilot CSI.

    Under DDP (``dist``) each rank scores its shard of the images; the counts are summed.
    """
    info = dist if dist is not None else DistInfo.single()
    was_training = pipeline.training
    pipeline.eval()
    device = next(pipeline.parameters()).device
    loader = BatchLoader(
        data.sample(min(limit, len(data))), 256, rank=info.rank, world_size=info.world_size
    )
    correct = total = 0
    for step, (x, y) in enumerate(loader):
        g = torch.Generator().manual_seed(10_000 + step + 1_000 * info.rank)
        out = pipeline(x.to(device), Channel(), snr_db, generator=g)
        correct += int((out.logits.argmax(1).cpu() == y).sum())
        total += len(y)
    pipeline.train(was_training)
    counts = all_reduce_sum(torch.tensor([correct, total], dtype=torch.float64), info)
    return float(counts[0]) / max(1.0, float(counts[1]))


def train_link(
    cfg: LinkTrainConfig,
    train: ImageDataset,
    test: ImageDataset,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    dist: DistInfo | None = None,
    max_steps: int | None = None,
) -> tuple[SemanticPipeline, dict[str, Any]]:
    """Train end to end, checkpointing every epoch to ``out_dir/state``; resumes from it.

    Returns the trained pipeline and a summary (epochs, wall-clock seconds, accuracy).
    ``max_steps`` stops early (for tests). Under DDP (``dist``, default: the initialised
    process group, if any) ``cfg.batch_size`` is the global batch, each rank trains on its
    shard, and only rank 0 writes the state.
    """
    info = dist if dist is not None else current_dist(device)
    device = info.device
    torch.manual_seed(cfg.seed)  # parameter initialisation only
    pipeline = build_pipeline(cfg).to(device)
    fmt = training_memory_format(pipeline.student, device)
    pipeline.student.to(memory_format=fmt)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(pipeline.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = train_loader(train, cfg.batch_size, info, seed=cfg.seed, augment=True)
    total = cfg.epochs * len(loader)
    loop = EpochLoop(
        out_dir / "state", model=pipeline, optimizer=opt, config=_jsonable(cfg),
        epochs=cfg.epochs, seed=cfg.seed, info=info, max_steps=max_steps, logger=log,
    )  # fmt: skip
    model = wrap_ddp(pipeline, info)
    pipeline.train()
    lengths = pipeline.lengths
    for epoch in loop.epochs(loader):
        g = channel_generator(cfg.seed, epoch, info)
        loss_sum, steps = device_sums((), device), 0  # read at the end
        for x, y in loop.batches(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            for group in opt.param_groups:
                group["lr"] = lr_at(loop.step, total, cfg)
            channel, snr, length, knowledge = draw_conditions(cfg, lengths, len(y), g)
            out = model(
                x.to(device).contiguous(memory_format=fmt),
                channel,
                snr.to(device),
                length=length.to(device),
                knowledge=knowledge,
                generator=g,
            )
            loss = F.cross_entropy(out.logits, y.to(device), label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(pipeline.parameters(), 5.0)
            opt.step()
            loss_sum, steps = loss_sum + loss.detach(), steps + 1
            loop.postfix(loss=lambda s=loss_sum, k=steps: f"{float(s) / k:.3f}")
        broadcast_buffers(pipeline, info)
        row = {"loss": all_reduce_mean(float(loss_sum) / max(1, steps), info)}  # the epoch's mean
        row["acc_awgn_20db"] = evaluate_clean_channel(
            pipeline, test, limit=cfg.eval_images, dist=info
        )
        loop.end_epoch(
            row, "epoch {epoch}: loss {loss:.3f}, accuracy (AWGN 20 dB, L max) {acc_awgn_20db:.4f}"
        )
    history, wall = loop.history, loop.wall
    pipeline.eval()
    return pipeline, {"history": history, "wall_seconds": wall, "config": _jsonable(cfg)}


def _jsonable(cfg: LinkTrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
