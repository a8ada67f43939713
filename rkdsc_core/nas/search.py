"""KDL-DARTS: a first-order DARTS search with distillation and a complexity penalty."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from rkdsc_core.checkpoint import (
    load_training_state,
    resume_training,
    save_epoch,
    save_training_state,
)
from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.distill import FeatureProjector, feature_loss, kd_loss
from rkdsc_core.models.genotypes import Genotype, genotype_to_dict
from rkdsc_core.nas.complexity import COST_KINDS, CostKind, ExpectedCost
from rkdsc_core.nas.supernet import SearchNetwork
from rkdsc_core.nas.teacher import Teacher
from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    current_dist,
    shard_batch_size,
)

__all__ = [
    "SearchBatch",
    "SearchConfig",
    "SearchModules",
    "SearchResult",
    "arch_step",
    "build_search_modules",
    "lr_at",
    "objective",
    "search",
    "search_inputs",
    "split_search_data",
    "weight_step",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """How :func:`search` searches (saved with every checkpoint and in ``search.json``).

    Attributes:
        C, layers: supernet width (initial node channels) and depth (cells).
        partial_channels: PC-DARTS ``K``: ``1/K`` of each edge's channels go through the
            mixed op (1 = every channel, as in DARTS; edge normalisation stays on).
        input_size: images are resized to this many pixels square. The default 16 makes a
            step ~2.8x cheaper than 32 (measured, docs/nas.md); the student still runs at 32.
        epochs: passes over the weight split.
        batch_size: images per weight step and per architecture step.
        w_lr, w_lr_min, w_momentum, w_weight_decay: SGD on the weights, cosine from
            ``w_lr`` to ``w_lr_min`` (DARTS' settings).
        arch_lr, arch_weight_decay: Adam (betas 0.5, 0.999) on the architecture logits.
        arch_start_epoch: architecture steps start at this epoch (PC-DARTS warms the
            weights up first); earlier epochs only train weights.
        lam: ``lambda``, the weight of the expected complexity in the architecture loss.
        cost: ``"params"`` or ``"macs"``: what the complexity term counts.
        use_kd: add the distillation terms (needs teacher outputs). ``use_kd=False`` with
            ``lam=0`` is plain (first-order, partial-channel) DARTS.
        temperature: ``T`` of the logit KD loss.
        ce_weight, kd_weight, feature_weight: weights of cross-entropy, logit KD and feature
            distillation in both the weight and the architecture loss.
        train_fraction: share of the (subset of the) training data used for weight steps;
            the rest drives architecture steps.
        subset: images drawn (seeded) from the training data before splitting; ``None``:
            all of them.
        augment: random crop + flip on both splits. Off by default: cached teacher outputs
            were computed on the unaugmented images.
        grad_clip: max gradient norm of a weight step.
        seed: weights, architecture logits, split and batch order.
    """

    C: int = 8
    layers: int = 5
    partial_channels: int = 4
    input_size: int = 16
    epochs: int = 10
    batch_size: int = 64
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    arch_lr: float = 6e-4
    arch_weight_decay: float = 1e-3
    arch_start_epoch: int = 0
    lam: float = 0.1
    cost: CostKind = "params"
    use_kd: bool = True
    temperature: float = 4.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    feature_weight: float = 1.0
    train_fraction: float = 0.5
    subset: int | None = 10_000
    augment: bool = False
    grad_clip: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("C", "layers", "partial_channels", "input_size", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.layers < 3:
            raise ValueError(
                f"layers must be >= 3 (two reduction cells and a normal one, else the normal "
                f"cell's architecture is never trained), got {self.layers}"
            )
        if self.C % 2 or self.C % self.partial_channels:
            raise ValueError(
                f"C must be even and a multiple of partial_channels; got C={self.C}, "
                f"partial_channels={self.partial_channels}"
            )
        if self.cost not in COST_KINDS:
            raise ValueError(f"cost must be one of {', '.join(COST_KINDS)}, got {self.cost!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam (lambda) must be finite and >= 0, got {self.lam}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {self.train_fraction}")
        if self.subset is not None and self.subset < 2:
            raise ValueError(f"subset must be >= 2 or None (all images), got {self.subset}")
        if self.arch_start_epoch < 0 or self.seed < 0:
            raise ValueError("arch_start_epoch and seed must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dataclasses.asdict(self)


class SearchResult(NamedTuple):
    """What :func:`search` returns.

    Attributes:
        genotype: the derived architecture.
        history: one dict per completed epoch (losses, supernet accuracy on the
            architecture split, expected cost, the genotype at that point, ...).
        alphas: the raw architecture logits (``alphas_normal``, ``alphas_reduce``
            ``[edges, ops]``; ``betas_normal``, ``betas_reduce`` ``[edges]``), on the CPU.
    """

    genotype: Genotype
    history: list[dict[str, Any]]
    alphas: dict[str, Tensor]


class SearchBatch(NamedTuple):
    """Images ``[B, 3, H, W]`` float32 in [0, 1], labels ``[B]`` int64, dataset positions
    ``[B]`` int64 (indices into the data passed to :func:`search`, for teacher look-ups)."""

    images: Tensor
    labels: Tensor
    positions: Tensor


class SearchModules(nn.Module):
    """The supernet and, when features are distilled, the projector onto the teacher feature."""

    def __init__(self, network: SearchNetwork, projector: FeatureProjector | None) -> None:
        super().__init__()
        self.network = network
        self.projector = projector

    def weights(self) -> list[nn.Parameter]:
        """Parameters the weight step trains: the supernet's weights and the projector."""
        extra = list(self.projector.parameters()) if self.projector is not None else []
        return self.network.weights() + extra


def lr_at(step: int, total: int, base: float, minimum: float = 0.0) -> float:
    """Cosine decay from ``base`` at step 0 to ``minimum`` at step ``total``."""
    frac = min(1.0, step / max(1, total))
    return minimum + 0.5 * (base - minimum) * (1.0 + math.cos(math.pi * frac))


def build_search_modules(
    cfg: SearchConfig, num_classes: int, teacher_feature_dim: int | None
) -> SearchModules:
    """A fresh supernet (+ projector) initialised from ``cfg.seed``; the global RNG is untouched.

    ``teacher_feature_dim``: ``D`` of the teacher feature, or ``None`` (no projector).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # module initialisers draw from the global RNG
        network = SearchNetwork(
            cfg.C,
            num_classes,
            cfg.layers,
            partial_channels=cfg.partial_channels,
            input_size=cfg.input_size,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        projector = (
            FeatureProjector(network.feature_dim, teacher_feature_dim)
            if teacher_feature_dim is not None
            else None
        )
    return SearchModules(network, projector)


def objective(
    modules: SearchModules, batch: SearchBatch, teacher: Teacher | None, cfg: SearchConfig
) -> dict[str, Tensor]:
    """The distillation objective shared by the weight and the architecture step.

    ``loss = ce_weight * CE + kd_weight * KD_T(student, teacher logits)
    + feature_weight * feature_loss(projector(pooled feature), teacher feature)``; the KD
    terms are present only with a teacher (and the feature term only with teacher features
    and a projector). The teacher runs under ``no_grad``.

    Returns:
        ``{"loss", "output" (logits), "task_loss" (CE), "kd_loss"?, "feature_loss"?}``.
    """
    images, labels, positions = batch
    feature = modules.network.forward_features(images)
    logits = modules.network.classifier(feature)
    ce = F.cross_entropy(logits, labels)
    out: dict[str, Tensor] = {"output": logits, "task_loss": ce}
    loss = cfg.ce_weight * ce
    if teacher is not None:
        with torch.no_grad():
            t_logits, t_feature = teacher(images, positions)
        kd = kd_loss(logits, t_logits, cfg.temperature)
        out["kd_loss"] = kd
        loss = loss + cfg.kd_weight * kd
        if t_feature is not None and modules.projector is not None:
            fl = feature_loss(modules.projector(feature), t_feature)
            out["feature_loss"] = fl
            loss = loss + cfg.feature_weight * fl
    out["loss"] = loss
    return out


def weight_step(
    modules: SearchModules,
    optimizer: torch.optim.Optimizer,
    batch: SearchBatch,
    teacher: Teacher | None,
    cfg: SearchConfig,
    dist: DistInfo | None = None,
) -> dict[str, Tensor]:
    """One SGD step on the weights (architecture logits get no gradient and do not move).

    Under a process group (``dist``) the gradients are averaged over the ranks before
    clipping, so every rank takes the same step on its shard of the global batch.
    """
    out = objective(modules, batch, teacher, cfg)
    params = modules.weights()
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward(inputs=params)  # type: ignore[no-untyped-call]
    _average_gradients(params, dist)
    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    return out


def arch_step(
    modules: SearchModules,
    optimizer: torch.optim.Optimizer,
    cost: ExpectedCost,
    batch: SearchBatch,
    teacher: Teacher | None,
    cfg: SearchConfig,
    dist: DistInfo | None = None,
) -> dict[str, Tensor]:
    """One first-order step on the architecture logits: the objective + ``lam`` * cost.

    Only the architecture logits receive gradients (the weights do not move; BatchNorm
    running statistics are updated by the forward pass, as in DARTS). Adds
    ``"expected_cost"`` and ``"arch_loss"`` to the returned dict. Under a process group
    (``dist``) the architecture gradients are averaged over the ranks.
    """
    net = modules.network
    out = objective(modules, batch, teacher, cfg)
    expected: Tensor = cost(net.alphas_normal, net.alphas_reduce)
    arch_loss = out["loss"] + cfg.lam * expected
    optimizer.zero_grad(set_to_none=True)
    arch_loss.backward(inputs=net.arch_parameters())  # type: ignore[no-untyped-call]
    _average_gradients(net.arch_parameters(), dist)
    optimizer.step()
    out["expected_cost"] = expected
    out["arch_loss"] = arch_loss
    return out


def _average_gradients(params: Sequence[nn.Parameter], dist: DistInfo | None) -> None:
    """Mean of every parameter's gradient over the ranks (nothing for one process)."""
    if dist is None or not dist.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = all_reduce_mean(flat, dist)
    for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def split_search_data(
    data: ImageDataset, cfg: SearchConfig
) -> tuple[tuple[ImageDataset, Tensor], tuple[ImageDataset, Tensor]]:
    """The seeded subset of ``data``, split into the weight and the architecture half.

    Returns ``((weight_split, positions), (arch_split, positions))``; ``positions``
    ``[M]`` int64 are the images' indices in ``data`` (for teacher look-ups).

    Raises:
        ValueError: a split holds fewer images than one batch.
    """
    order = data.sample_indices(cfg.subset, seed=cfg.seed)
    n = len(order)
    n_train = round(n * cfg.train_fraction)
    parts = (order[:n_train], order[n_train:])
    for name, part in zip(("weight", "architecture"), parts, strict=True):
        if len(part) < cfg.batch_size:
            raise ValueError(
                f"the {name} split has {len(part)} images (subset {n} x "
                f"train_fraction {cfg.train_fraction}), fewer than batch_size "
                f"{cfg.batch_size}; lower batch_size or raise subset"
            )
    a, b = parts
    return (data.subset(a), torch.from_numpy(a)), (data.subset(b), torch.from_numpy(b))


def _batches(loader: BatchLoader, positions: Tensor) -> Iterator[SearchBatch]:
    """Yield :class:`SearchBatch` es with each image's position in the original data."""
    order = torch.from_numpy(loader.indices())
    for k, (x, y) in enumerate(loader):
        idx = order[k * loader.batch_size : k * loader.batch_size + len(y)]
        yield SearchBatch(x, y, positions[idx].to(x.device))


def _alphas(net: SearchNetwork) -> dict[str, Tensor]:
    names = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")
    return {n: p.detach().cpu().clone() for n, p in zip(names, net.arch_parameters(), strict=True)}


def _check_teacher(cfg: SearchConfig, teacher: Teacher | None, n: int) -> Teacher | None:
    if not cfg.use_kd:
        if teacher is not None:
            log.info("use_kd is off: the teacher outputs are ignored (plain DARTS objective)")
        return None
    if teacher is None:
        raise ValueError(
            "use_kd=True needs teacher outputs; pass a Teacher (e.g. TeacherOutputs) or set "
            "use_kd=False (and lam=0 for plain DARTS)"
        )
    if cfg.augment:
        log.warning(
            "augment=True with teacher outputs: cached outputs belong to the un-augmented "
            "images, so the KD targets only approximate the augmented views"
        )
    size = len(teacher) if isinstance(teacher, Sized) else None
    if size is not None and size != n:
        raise ValueError(
            f"teacher outputs cover {size} images but the training data has {n}; they must "
            f"come from the same split, in the same order"
        )
    return teacher


def search_inputs(data: ImageDataset, teacher: Teacher | None) -> dict[str, Any]:
    """What a search ran on besides its config: the data split and the teacher's weights.

    A run folder resumes, and a λ table reuses a row, only for the same inputs.
    ``teacher``'s ``source`` (:class:`~rkdsc_core.nas.teacher.TeacherOutputs`) names its
    weights' sha256 and, for caches that record it, its config (the same weights under
    another logit scale give other targets): ``{"weights_sha256", "config"}`` then, the
    bare sha256 for older caches; a teacher without either is recorded as ``"unknown"``.
    """
    source = getattr(teacher, "source", None) or {}
    sha = source.get("weights_sha256", "unknown")
    key: Any = sha
    if "config" in source:
        key = {"weights_sha256": sha, "config": source["config"]}
    return {
        "data": {
            "name": data.name,
            "split": data.split,
            "source_sha256": data.source_sha256,
            "num_images": len(data),
        },
        "teacher": None if teacher is None else key,
    }


def search(
    cfg: SearchConfig,
    train_data: ImageDataset,
    teacher: Teacher | None,
    out_dir: Path | str,
    *,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
    dist: DistInfo | None = None,
) -> SearchResult:
    """Run the KDL-DARTS search; checkpoints every epoch to ``out_dir`` and resumes from it.

    Each step is first-order DARTS: an architecture step on a batch of the architecture
    split (:func:`arch_step`, from ``arch_start_epoch`` on), then a weight step on a batch of
    the weight split (:func:`weight_step`). After each epoch the weights, projector,
    architecture logits and both optimizers are saved (``out_dir/state`` and
    ``out_dir/arch-NNNN``, safetensors + JSON); a later call with the same ``cfg`` continues
    after the last saved epoch, with the same result as an uninterrupted run.

    Args:
        cfg: the search configuration.
        train_data: images to search on (split by :func:`split_search_data`).
        teacher: teacher outputs indexed by position in ``train_data``; ``None`` (required
            when ``cfg.use_kd`` is off, where any teacher is ignored).
        out_dir: run folder for checkpoints.
        device: torch device for compute.
        max_steps: stop after this many steps in total (tests); an unfinished epoch is
            not checkpointed.
        dist: the data-parallel job (default: :func:`current_dist`, one process unless a
            process group is up). ``cfg.batch_size`` is the global batch, split over the
            ranks; weight and architecture gradients are averaged, so every rank ends with
            the same weights and logits; only rank 0 writes checkpoints and shows progress.

    Raises:
        ValueError: inconsistent teacher / ``use_kd``, too little data for a batch, or an
            ``out_dir`` checkpoint made with another config, data split or teacher.
    """
    info = dist if dist is not None else current_dist(device)
    device = info.device
    out = Path(out_dir)
    teacher = _check_teacher(cfg, teacher, len(train_data))
    (w_data, w_pos), (a_data, a_pos) = split_search_data(train_data, cfg)
    t_dim = teacher.feature_dim if teacher is not None else None
    modules = build_search_modules(cfg, len(train_data.classes), t_dim).to(device)
    net = modules.network
    w_opt = torch.optim.SGD(
        modules.weights(), cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    a_opt = torch.optim.Adam(
        net.arch_parameters(),
        lr=cfg.arch_lr,
        betas=(0.5, 0.999),
        weight_decay=cfg.arch_weight_decay,
    )
    arch_holder = nn.ParameterList(net.arch_parameters())
    cost = ExpectedCost.for_network(net, cfg.cost).to(device)
    loader_kw: dict[str, Any] = {
        "shuffle": True,
        "drop_last": True,
        "augment": cfg.augment,
        "device": device,
        "rank": info.rank,
        "world_size": info.world_size,
    }
    rank_batch = shard_batch_size(cfg.batch_size, info)
    w_loader = BatchLoader(w_data, rank_batch, seed=cfg.seed, **loader_kw)
    a_loader = BatchLoader(a_data, rank_batch, seed=cfg.seed + 1, **loader_kw)
    steps_per_epoch = min(len(w_loader), len(a_loader))
    total = cfg.epochs * steps_per_epoch
    # Runs from before the inputs were recorded resume as they did (no check possible).
    inputs = search_inputs(train_data, teacher)
    config = cfg.to_dict() | {"inputs": inputs}

    state = out / "state"
    start_epoch, step, history, wall, progress = resume_training(
        state, model=modules, optimizer=w_opt, config=config, defaults={"inputs": inputs}
    )
    if start_epoch:
        load_training_state(out / progress["arch_state"], model=arch_holder, optimizer=a_opt)
        log.info("resumed from %s at epoch %d (step %d)", state, start_epoch, step)

    modules.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        w_loader.set_epoch(epoch)
        a_loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        done, correct, seen = 0, 0, 0
        search_arch = epoch >= cfg.arch_start_epoch
        lr = cfg.w_lr
        batches = zip(_batches(w_loader, w_pos), _batches(a_loader, a_pos), strict=False)
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"search {epoch + 1}/{cfg.epochs}",
            disable=not info.is_main,
        )
        for w_batch, a_batch in bar:
            lr = lr_at(step, total, cfg.w_lr, cfg.w_lr_min)
            for group in w_opt.param_groups:
                group["lr"] = lr
            if search_arch:
                a_out = arch_step(modules, a_opt, cost, a_batch, teacher, cfg, info)
                _accumulate(sums, a_out, "val_")
                correct += int((a_out["output"].argmax(1) == a_batch.labels).sum())
                seen += len(a_batch.labels)
            w_out = weight_step(modules, w_opt, w_batch, teacher, cfg, info)
            _accumulate(sums, w_out, "train_")
            bar.set_postfix(loss=f"{sums['train_loss'] / (done + 1):.3f}")
            done += 1
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        bar.close()
        if done < steps_per_epoch:
            log.info("stopped after %d steps, inside epoch %d (not checkpointed)", step, epoch + 1)
            break
        wall += time.time() - t0
        broadcast_buffers(modules, info)
        with torch.no_grad():
            expected = float(cost(net.alphas_normal, net.alphas_reduce))
        entry: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": lr}
        entry |= {k: all_reduce_mean(v / done, info) for k, v in sorted(sums.items())}
        if seen:
            entry["val_accuracy"] = all_reduce_sum(correct, info) / all_reduce_sum(seen, info)
        entry["expected_cost"] = expected
        entry["genotype"] = genotype_to_dict(net.genotype())
        entry["wall_seconds"] = wall
        history.append(entry)
        if info.is_main:
            log.info(
                "epoch %d: train loss %.3f, expected %s cost %.3f",
                epoch + 1,
                entry["train_loss"],
                cfg.cost,
                expected,
            )
            _save(out, modules, w_opt, arch_holder, a_opt, epoch + 1, step, history, wall, config)
        barrier(info)
        if max_steps is not None and step >= max_steps:
            break
    modules.eval()
    return SearchResult(net.genotype(), history, _alphas(net))


_LOGGED = ("loss", "task_loss", "kd_loss", "feature_loss", "expected_cost", "arch_loss")


def _accumulate(sums: dict[str, float], out: dict[str, Tensor], prefix: str) -> None:
    for key in _LOGGED:
        if key in out:
            name = prefix + key.removesuffix("_loss").replace("task", "ce")
            sums[name] = sums.get(name, 0.0) + float(out[key].detach())


def _save(
    out: Path,
    modules: SearchModules,
    w_opt: torch.optim.Optimizer,
    arch_holder: nn.Module,
    a_opt: torch.optim.Optimizer,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    wall: float,
    config: dict[str, Any],
) -> None:
    # The architecture optimizer goes to its own per-epoch file first; "state" (written
    # last, by rename) names it, so an interruption between the two writes leaves the
    # previous, consistent pair. Older arch files are removed afterwards.
    arch_name = f"arch-{epoch:04d}"
    save_training_state(out / arch_name, model=arch_holder, optimizer=a_opt, progress={})
    save_epoch(
        out / "state",
        model=modules,
        optimizer=w_opt,
        epoch=epoch, step=step, history=history, wall_seconds=wall, config=config,
        arch_state=arch_name,
    )  # fmt: skip
    for old in out.glob("arch-*"):
        if not old.name.startswith(arch_name + "."):
            old.unlink()
