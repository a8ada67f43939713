"""Robust knowledge distillation (RKD-SC's two training stages) on the pre-stored teacher cache.

Stage 1 (:func:`train_student`): the genotype network (``darts-student``) is trained from
scratch on the teacher's cached outputs, no channel::

    loss = w_ce * CE + w_kd * kd_loss(student, teacher, T) + w_feat * feature_loss(P(pool), f_t)

Each epoch every image is shown as one randomly drawn cached view, with exactly the pixels
the teacher saw (:meth:`~rkdsc_core.distill.TeacherCache.batch`). The learned projector
``P`` lives in the training state; the student is written to ``out_dir/student``.

Stage 2 (:func:`train_codec`): ``SemanticPipeline(student, fresh CAT codec)`` is trained
with the channel in the loop (random model, SNR, ``L`` and channel knowledge, drawn by
:func:`~rkdsc_core.train.link.draw_conditions`). The student trains at
``student_lr_scale * lr`` (at 0 it is frozen: no gradient, its BatchNorm statistics kept),
the codec (and a second projector) at ``lr``::

    loss = w_mse * feature_loss(P2(pool(decoded tokens)), f_t) + w_kd * kd_loss(link, teacher, T)
           + w_ce * CE

so the received features stay close to the teacher's noise-free ones. With
``teacher_targets=False`` the loss is CE only (the "codec trained without teacher targets"
baseline). The link bundle is written with :func:`~rkdsc_core.link.save_link`.

Both stages checkpoint every epoch to ``out_dir/state``, resume from it (refusing another
config, teacher cache or student), and run under DDP like :mod:`rkdsc_core.train.link`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.channel import Channel
from rkdsc_core.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_model,
    save_checkpoint,
    saved_progress,
)
from rkdsc_core.data import ImageDataset, epoch_generator
from rkdsc_core.distill import FeatureProjector, TeacherCache, TeacherCacheError
from rkdsc_core.distill.losses import feature_loss, kd_loss
from rkdsc_core.link.bundle import save_link
from rkdsc_core.link.pipeline import SemanticPipeline
from rkdsc_core.models import Backbone, create_model
from rkdsc_core.models.cat import CATCodec
from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    current_dist,
    train_loader,
    wrap_ddp,
)
from rkdsc_core.train.link import (
    LinkTrainConfig,
    channel_generator,
    draw_conditions,
    evaluate_clean_channel,
)
from rkdsc_core.train.loop import EpochLoop, device_sums
from rkdsc_core.train.memory_format import training_memory_format
from rkdsc_core.train.teacher import evaluate_teacher

__all__ = [
    "CodecRKDConfig",
    "StudentKDConfig",
    "build_student",
    "lr_at",
    "train_codec",
    "train_student",
]

log = logging.getLogger(__name__)

_VIEW_STREAM = 7  # epoch_generator stream of the per-image view draws
PROJECTOR = "projector"
"""Stage 1's feature projector, written beside ``student`` in the run folder."""


@dataclass(frozen=True)
class StudentKDConfig:
    """How :func:`train_student` trains (stage 1; saved with every checkpoint).

    ``genotype`` is a reference name (``"darts_v2"``) or a genotype dict
    (:func:`~rkdsc_core.models.genotypes.genotype_to_dict`); ``student_overrides`` are
    further :class:`~rkdsc_core.models.student.StudentConfig` fields (e.g. ``token_dim``).
    """

    genotype: str | dict[str, Any] = "darts_v2"
    C: int = 16
    layers: int = 5
    student_overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.0
    w_ce: float = 1.0
    w_kd: float = 1.0
    w_feat: float = 1.0
    temperature: float = 4.0
    seed: int = 0
    eval_images: int = 2000

    def __post_init__(self) -> None:
        _validate(self, ("w_ce", "w_kd", "w_feat"))
        both = sorted({"genotype", "C", "layers", "num_classes"} & set(self.student_overrides))
        if both:
            raise ValueError(
                f"set {', '.join(both)} as StudentKDConfig fields, not in student_overrides"
            )


@dataclass(frozen=True)
class CodecRKDConfig:
    """How :func:`train_codec` trains (stage 2; saved with every checkpoint)."""

    codec_overrides: dict[str, Any] = field(default_factory=dict)
    num_pilots: int = 8
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    student_lr_scale: float = 0.01
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.0
    w_ce: float = 1.0
    w_kd: float = 1.0
    w_mse: float = 1.0
    temperature: float = 4.0
    teacher_targets: bool = True
    snr_db_range: tuple[float, float] = (-5.0, 20.0)
    channels: tuple[str, ...] = ("awgn", "rayleigh")
    knowledge: tuple[str, ...] = ("perfect", "pilot")
    seed: int = 0
    eval_images: int = 2000

    def __post_init__(self) -> None:
        _validate(self, ("w_ce", "w_kd", "w_mse", "student_lr_scale"))


def _train_mode(net: nn.Module, student: nn.Module, frozen: bool) -> None:
    net.train()
    if frozen:  # BatchNorm in eval mode: its running statistics stay stage 1's
        student.eval()


def _validate(cfg: StudentKDConfig | CodecRKDConfig, nonneg: tuple[str, ...]) -> None:
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {cfg.epochs}, {cfg.batch_size}")
    if cfg.temperature <= 0 or cfg.lr <= 0:
        raise ValueError(f"temperature and lr must be > 0, got {cfg.temperature}, {cfg.lr}")
    bad = [k for k in nonneg if getattr(cfg, k) < 0]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be >= 0")


def lr_at(step: int, total: int, cfg: StudentKDConfig | CodecRKDConfig) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warm = max(1, int(cfg.warmup_fraction * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def build_student(cfg: StudentKDConfig, num_classes: int) -> Backbone:
    """A fresh ``darts-student`` of ``cfg.genotype`` (seed the global RNG first)."""
    overrides = {"C": cfg.C, "layers": cfg.layers, "num_classes": num_classes}
    student = create_model(
        "darts-student", genotype=cfg.genotype, **(overrides | cfg.student_overrides)
    )
    assert isinstance(student, Backbone)
    return student


class _StudentKD(nn.Module):
    """Stage 1's task: the student and its feature projector; forward returns the losses."""

    def __init__(self, student: Backbone, projector: FeatureProjector, cfg: StudentKDConfig):
        super().__init__()
        self.student = student
        self.projector = projector
        self.cfg = cfg

    def forward(
        self, images: Tensor, labels: Tensor, t_logits: Tensor, t_features: Tensor
    ) -> dict[str, Tensor]:
        c = self.cfg
        tokens = self.student.forward_tokens(images)
        logits = self.student.forward_head(tokens)
        task = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
        kd = kd_loss(logits, t_logits, c.temperature)
        feat = feature_loss(self.projector(self.student.pool(tokens)), t_features)
        loss = c.w_ce * task + c.w_kd * kd + c.w_feat * feat
        return {"loss": loss, "output": logits, "task_loss": task, "kd_loss": kd, "feat_loss": feat}


class _CodecRKD(nn.Module):
    """Stage 2's task: the pipeline (and projector) through a channel; returns the losses."""

    def __init__(
        self, pipeline: SemanticPipeline, projector: FeatureProjector | None, cfg: CodecRKDConfig
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.projector = projector
        self.cfg = cfg

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        t_logits: Tensor,
        t_features: Tensor,
        channel: Channel,
        snr_db: Tensor,
        length: Tensor,
        knowledge: str,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        c = self.cfg
        out = self.pipeline(
            images, channel, snr_db, length=length, knowledge=knowledge, generator=generator
        )
        task = F.cross_entropy(out.logits, labels, label_smoothing=c.label_smoothing)
        if self.projector is None:  # the baseline: no teacher term at all
            kd = mse = task.new_zeros(())
            loss = c.w_ce * task
        else:
            kd = kd_loss(out.logits, t_logits, c.temperature)
            mse = feature_loss(self.projector(self.pipeline.student.pool(out.tokens)), t_features)
            loss = c.w_mse * mse + c.w_kd * kd + c.w_ce * task
        return {
            "loss": loss,
            "output": out.logits,
            "task_loss": task,
            "kd_loss": kd,
            "mse_loss": mse,
        }


def _jsonable(cfg: StudentKDConfig | CodecRKDConfig) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return out


def _check_cache(cache: TeacherCache, train: ImageDataset) -> None:
    if cache.num_images != len(train) or not torch.equal(
        cache.labels, torch.from_numpy(np.array(train.labels, dtype=np.int64))
    ):
        raise TeacherCacheError(
            f"the teacher cache ({cache.num_images} images) was not built on this training "
            f"split ({len(train)} images) or its labels differ"
        )


_STUDENT_TERMS = ("loss", "task_loss", "kd_loss", "feat_loss")
_CODEC_TERMS = ("loss", "task_loss", "kd_loss", "mse_loss")


def _optimise(
    opt: torch.optim.Optimizer, net: nn.Module, out: dict[str, Tensor], terms: tuple[str, ...]
) -> Tensor:
    """One step on ``out["loss"]`` (gradient norm clipped at 5); ``[len(terms)]`` values of
    the loss terms, for the epoch means, on the losses' device (not read here: reading them
    would wait for the GPU every step)."""
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    opt.step()
    return torch.stack([out[k].detach() for k in terms])


def _epoch_views(cache: TeacherCache, cfg: StudentKDConfig | CodecRKDConfig, epoch: int) -> Tensor:
    """``[N]`` one view per image for ``epoch`` (the same on every rank)."""
    return cache.draw_views(cache.num_images, epoch_generator(cfg.seed, epoch, _VIEW_STREAM))


def _teacher_of(cache: TeacherCache) -> dict[str, Any]:
    """Which teacher a cache holds: name, path, weights sha256, clean test accuracy."""
    teacher = cache.manifest.get("teacher", {})
    out = {k: teacher.get(k) for k in ("model", "path", "weights_sha256")}
    return out | {"test_accuracy": teacher.get("metrics", {}).get("test_accuracy")}


def train_student(
    cfg: StudentKDConfig,
    cache: TeacherCache,
    train: ImageDataset,
    test: ImageDataset,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    dist: DistInfo | None = None,
    max_steps: int | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """Stage 1: distil the cached teacher into a fresh student (no channel).

    Checkpoints every epoch to ``out_dir/state`` (student + projector + optimizer) and
    resumes from it; writes ``out_dir/student`` (:func:`save_checkpoint`, with the clean
    test accuracy) and ``out_dir/projector`` (the feature projector, which stage 2 starts
    its own from) at the end. ``max_steps`` stops early (for tests). Under DDP
    ``cfg.batch_size`` is the global batch and only rank 0 writes.

    Returns the student (eval mode) and a summary: history (per epoch: loss, task_loss,
    kd_loss, feat_loss, test_accuracy), wall seconds, checkpoint path.
    """
    info = dist if dist is not None else current_dist(device)
    device = info.device
    _check_cache(cache, train)
    torch.manual_seed(cfg.seed)  # parameter initialisation only
    student = build_student(cfg, num_classes=int(cache.logits.shape[-1]))
    projector = FeatureProjector(student.feature_dim, int(cache.features.shape[-1]))
    net = _StudentKD(student, projector, cfg).to(device)
    fmt = training_memory_format(student, device)
    student.to(memory_format=fmt)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = train_loader(train, cfg.batch_size, info, seed=cfg.seed, augment=False)
    total = cfg.epochs * len(loader)
    ident = {"config": _jsonable(cfg), "teacher_cache": cache.manifest.get("weights_sha256")}
    loop = EpochLoop(
        out_dir / "state", model=net, optimizer=opt, config=ident, epochs=cfg.epochs,
        seed=cfg.seed, info=info, max_steps=max_steps, logger=log,
    )  # fmt: skip
    model = wrap_ddp(net, info)
    net.train()
    history = loop.history
    acc = history[-1]["test_accuracy"] if history else float("nan")
    for epoch in loop.epochs(loader):
        views, order, bs = _epoch_views(cache, cfg, epoch), loader.indices(), loader.batch_size
        sums, n = device_sums(4, device), 0  # read once an epoch
        desc = f"student epoch {epoch + 1}/{cfg.epochs}"
        for start in loop.batches(range(0, len(order), bs), desc=desc):
            idx = order[start : start + bs]
            b = cache.batch(train, idx, views[idx], device=device)
            for group in opt.param_groups:
                group["lr"] = lr_at(loop.step, total, cfg)
            out = model(
                b.images.contiguous(memory_format=fmt),
                b.labels,
                b.logits,
                b.features,
            )
            sums += _optimise(opt, net, out, _STUDENT_TERMS)
            n += 1
            loop.postfix(loss=lambda s=sums, k=n: f"{float(s[0]) / k:.3f}")
        broadcast_buffers(net, info)
        means = all_reduce_mean(sums / max(1, n), info)
        with torch.no_grad():
            acc = evaluate_teacher(student, test, limit=cfg.eval_images, flip_tta=False, dist=info)[
                "test_accuracy"
            ]
        net.train()
        row = {"test_accuracy": acc} | {
            k: float(v) for k, v in zip(_STUDENT_TERMS, means, strict=True)
        }
        loop.end_epoch(
            row, "student epoch {epoch}: loss {loss:.3f}, clean accuracy {test_accuracy:.4f}"
        )
    wall = loop.wall
    student.eval()
    path = out_dir / "student"
    summary: dict[str, Any] = {"history": history, "wall_seconds": wall, **ident}
    if info.is_main:
        save_checkpoint(
            path,
            student,
            name="darts-student",
            genotype=getattr(getattr(student, "config", None), "genotype", None),
            dataset={"name": train.name, "sha256": train.source_sha256},
            metrics={"test_accuracy": acc, "epochs": len(history), "history": history},
            extra={
                "training": {
                    "stage": "rkd-1 (student distillation)",
                    "wall_seconds": wall,
                    **ident,
                },
                "teacher": _teacher_of(cache),
            },
        )
        save_checkpoint(
            out_dir / PROJECTOR,
            projector,
            name="feature-projector",
            config=projector.dims,
            extra={"teacher_cache": ident["teacher_cache"]},
        )
    barrier(info)
    summary["checkpoint"] = str(checkpoint_paths(path)[1])
    return student, summary


def _stage1_projector(
    student_ckpt: Path | str, projector: FeatureProjector, cache: TeacherCache
) -> str | None:
    """Load stage 1's projector into ``projector`` when it lies beside the student
    checkpoint (``PROJECTOR``), has its shape and was trained on this teacher cache.

    Returns the loaded weights' sha256, or ``None`` (``projector`` left fresh: a teacher
    as the student, a student from elsewhere, or another teacher's cache).
    """
    path = Path(student_ckpt).with_name(PROJECTOR)
    if not checkpoint_paths(path)[1].is_file():
        log.info("no stage-1 projector beside %s: stage 2 starts a fresh one", student_ckpt)
        return None
    tensors, doc = load_checkpoint(path)
    why = None
    if doc.get("extra", {}).get("teacher_cache") != cache.manifest.get("weights_sha256"):
        why = "it was trained on another teacher cache"
    elif doc.get("config") != projector.dims:
        why = f"its shape {doc.get('config')} is not {projector.dims}"
    if why is not None:
        log.warning("not starting from the stage-1 projector %s: %s", path, why)
        return None
    projector.load_state_dict(tensors)
    return str(doc["weights_sha256"])


def train_codec(
    cfg: CodecRKDConfig,
    student_ckpt: Path | str,
    cache: TeacherCache,
    train: ImageDataset,
    test: ImageDataset,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    dist: DistInfo | None = None,
    max_steps: int | None = None,
    weights_out: Path | None = None,
    fp16: bool = False,
) -> tuple[SemanticPipeline, dict[str, Any]]:
    """Stage 2: train a fresh CAT codec (and fine-tune the student) through the channel.

    ``student_ckpt`` may hold any registered :class:`Backbone`: the stage-1 student, or the
    teacher itself, whose codec trained the same way is the large-model upper reference.

    Checkpoints every epoch to ``out_dir/state`` and resumes from it; at the end rank 0
    writes the link bundle to ``weights_out`` (default ``out_dir/weights``; ``fp16``
    halves it). Returns the pipeline (eval mode) and a summary (history per epoch: loss,
    task_loss, kd_loss, mse_loss, acc_awgn_20db; wall seconds; weights folder).
    """
    info = dist if dist is not None else current_dist(device)
    device = info.device
    _check_cache(cache, train)
    torch.manual_seed(cfg.seed)  # parameter initialisation only
    student = load_model(student_ckpt)
    if not isinstance(student, Backbone):
        raise TypeError(f"{student_ckpt} holds a {type(student).__name__}, not a Backbone")
    # Name and provenance from the manifest alone (the weights are loaded once, above).
    student_doc = json.loads(checkpoint_paths(student_ckpt)[1].read_text())
    student_name = str(student_doc["model"])
    codec = create_model(
        "cat-codec",
        **{"token_dim": student.token_dim, "num_tokens": student.num_tokens} | cfg.codec_overrides,
    )
    assert isinstance(codec, CATCodec)
    pipeline = SemanticPipeline(student, codec, num_pilots=cfg.num_pilots)
    projector, warm = None, None
    state = out_dir / "state"
    if cfg.teacher_targets:
        projector = FeatureProjector(student.feature_dim, int(cache.features.shape[-1]))
        # A run in progress keeps the start it had (its state holds the projector since);
        # only a fresh one looks for stage 1's.
        saved = saved_progress(state).get("config")
        if saved is not None:
            warm = saved.get("projector")
        else:
            warm = _stage1_projector(student_ckpt, projector, cache)
    net = _CodecRKD(pipeline, projector, cfg).to(device)
    fmt = training_memory_format(student, device)
    student.to(memory_format=fmt)  # type: ignore[call-overload]
    frozen = cfg.student_lr_scale == 0  # a fixed student: no gradient, no statistics update
    if frozen:  # (otherwise what the model itself fixes, e.g. FastNet's stem, stays fixed)
        student.requires_grad_(False)
    rest = [p for n, p in net.named_parameters() if not n.startswith("pipeline.student.")]
    scales = (cfg.student_lr_scale, 1.0)  # per param group: the student, the codec + projector
    opt = torch.optim.AdamW(
        [{"params": list(student.parameters())}, {"params": rest}],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    loader = train_loader(train, cfg.batch_size, info, seed=cfg.seed, augment=False)
    total = cfg.epochs * len(loader)
    ident = {
        "config": _jsonable(cfg),
        "teacher_cache": cache.manifest.get("weights_sha256"),
        "student": student_doc.get("weights_sha256"),
        "projector": warm,  # stage 1's, or None: a fresh one
    }
    conditions = LinkTrainConfig(
        snr_db_range=cfg.snr_db_range, channels=cfg.channels, knowledge=cfg.knowledge
    )
    loop = EpochLoop(
        state, model=net, optimizer=opt, config=ident, epochs=cfg.epochs, seed=cfg.seed,
        info=info, max_steps=max_steps, defaults={"projector": None}, logger=log,
    )  # fmt: skip
    model = wrap_ddp(net, info)
    _train_mode(net, student, frozen)
    for epoch in loop.epochs(loader):
        views, order, bs = _epoch_views(cache, cfg, epoch), loader.indices(), loader.batch_size
        g = channel_generator(cfg.seed, epoch, info)
        sums, n = device_sums(4, device), 0  # read once an epoch
        desc = f"codec epoch {epoch + 1}/{cfg.epochs}"
        for start in loop.batches(range(0, len(order), bs), desc=desc):
            idx = order[start : start + bs]
            b = cache.batch(train, idx, views[idx], device=device)
            for group, scale in zip(opt.param_groups, scales, strict=True):
                group["lr"] = scale * lr_at(loop.step, total, cfg)
            channel, snr, length, knowledge = draw_conditions(
                conditions, pipeline.lengths, len(idx), g
            )
            out = model(
                b.images.contiguous(memory_format=fmt),
                b.labels,
                b.logits,
                b.features,
                channel,
                snr.to(device),
                length.to(device),
                knowledge,
                g,
            )
            sums += _optimise(opt, net, out, _CODEC_TERMS)
            n += 1
            loop.postfix(loss=lambda s=sums, k=n: f"{float(s[0]) / k:.3f}")
        broadcast_buffers(net, info)
        means = all_reduce_mean(sums / max(1, n), info)
        acc = evaluate_clean_channel(pipeline, test, limit=cfg.eval_images, dist=info)
        _train_mode(net, student, frozen)
        row = {"acc_awgn_20db": acc} | {
            k: float(v) for k, v in zip(_CODEC_TERMS, means, strict=True)
        }
        loop.end_epoch(row, "codec epoch {epoch}: loss {loss:.3f}, AWGN 20 dB {acc_awgn_20db:.4f}")
    history, wall = loop.history, loop.wall
    pipeline.eval()
    dest = weights_out if weights_out is not None else out_dir / "weights"
    summary: dict[str, Any] = {"history": history, "wall_seconds": wall, **ident}
    if info.is_main:
        recipe = (
            "RKD stage 2: CAT codec through the channel with the teacher's targets"
            if cfg.teacher_targets
            else "CAT codec through the channel without teacher targets (cross-entropy only)"
        )
        save_link(
            dest,
            pipeline,
            student_name=student_name,
            classes=train.classes,
            fp16=fp16,
            meta={
                "recipe": recipe,
                "dataset": {"name": train.name, "sha256": train.source_sha256},
                "training": summary,
                # Where the student came from (stage 1, or the teacher's own training).
                "student_source": {
                    k: student_doc.get(k) for k in ("command", "metrics", "extra", "git_commit")
                },
            },
            metrics={"history": history},
        )
    barrier(info)
    summary["weights"] = str(dest)
    return pipeline, summary
