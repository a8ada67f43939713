"""Train (or fine-tune) a classification teacher: CIFAR ResNet, EfficientNet-Lite0 or CLIP ViT.

The teacher is the large model RKD-SC distils from. Three families, chosen by the
registered model name:

* ``fastnet-cifar`` (default; :mod:`rkdsc_core.models.fastnet`): the fast-training
  convnet with a whitening stem, from scratch with batch 1024, Nesterov SGD, label
  smoothing 0.2, pad-4 crops and a 64x learning rate on the norm shifts. This is the
  CPU-sized teacher (target: >= 92% CIFAR-10 test accuracy in 20 epochs).
* ``resnet18-cifar-w32`` (``resnet18-cifar`` for full width): trained from scratch with
  SGD + Nesterov, a one-cycle schedule, label smoothing and crop/flip augmentation
  (89.5% after 20 epochs on the CPU; it needs about 30 for 92%).
* ``efficientnet-lite0``: ImageNet weights loaded by the model factory, a new head;
  AdamW fine-tuning, optionally with the backbone frozen for the first epochs.
* ``clip-vit-b32`` with ``model_overrides={"checkpoint": PATH}`` (local CLIP weights):
  a linear probe (``freeze_backbone_epochs >= epochs``) or fine-tuning of the tower.

:func:`teacher_config` gives each family's preset. Training checkpoints every epoch to
``out_dir/state`` and resumes from it with the same result; it runs unchanged under
``torchrun`` (see :mod:`rkdsc_core.train.ddp`).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from rkdsc_core.checkpoint import (
    checkpoint_paths,
    save_checkpoint,
)
from rkdsc_core.data import PAD_MODES, BatchLoader, ImageDataset, to_tensor
from rkdsc_core.models import Backbone, create_model
from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    current_dist,
    train_loader,
    wrap_ddp,
)
from rkdsc_core.train.loop import EpochLoop, device_sums
from rkdsc_core.train.memory_format import training_memory_format

__all__ = [
    "TEACHER_PRESETS",
    "Lookahead",
    "TeacherTrainConfig",
    "build_teacher",
    "evaluate_teacher",
    "load_teacher_recipe",
    "lr_at",
    "predict_flip_tta",
    "predict_tta",
    "teacher_config",
    "train_teacher",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherTrainConfig:
    """How :func:`train_teacher` trains (saved with every checkpoint; resuming needs the same).

    Args:
        model: registered model name (``fastnet-cifar``, ``resnet18-cifar-w32``,
            ``efficientnet-lite0``, ``clip-vit-b32``, ...).
        model_overrides: constructor arguments (``{"width": 32}``, ``{"image_size": 64}``,
            ``{"checkpoint": "/path/to/clip"}``); ``num_classes`` defaults to the dataset's.
        epochs: passes over the training split.
        batch_size: global batch (split evenly over DDP ranks).
        lr: peak learning rate of the one-cycle schedule (see :func:`lr_at`).
        weight_decay: decoupled (AdamW) or L2 (SGD) decay of weights; biases and norm
            parameters are not decayed.
        momentum: SGD (Nesterov) momentum; AdamW's beta1.
        optimizer: ``"sgd"`` (from scratch) or ``"adamw"`` (fine-tuning).
        label_smoothing: cross-entropy label smoothing.
        warmup_fraction: share of all steps spent warming up linearly.
        div_factor: the schedule starts at ``lr / div_factor``.
        final_div_factor: and ends at ``lr / (div_factor * final_div_factor)``.
        channels_last: NHWC memory format for model and inputs (faster convolutions).
        flip_tta: evaluate with the mean logits of the image and its mirror image.
        translate_tta: with ``flip_tta``, also average (at half the weight) the flip TTA of
            the image shifted one pixel up-left and one down-right (reflect padding):
            six views, as Jordan's airbench (:func:`predict_tta`).
        seed: initialisation, data order, augmentation and dropout, >= 0.
        eval_images: test images scored after each epoch (``None``: the whole test split).
        freeze_backbone_epochs: train only the head for this many first epochs (the rest
            of the model in eval mode); ``>= epochs`` is a linear probe.
        backbone_lr_scale: learning rate of everything but the head, relative to ``lr``.
        bias_lr_scale: learning rate of biases and norm parameters (all 0-/1-d
            parameters), relative to their group's.
        crop_padding: the training crop's padding [pixels per side] (random
            translations of up to this many pixels); 0: flips only.
        pad_mode: how that padding is filled: ``"zeros"`` (black) or ``"reflect"``.
        decay_biases: decay the 0-/1-d parameters too (biases, norm shifts, and norm
            scales where a model trains them), by the same amount per step as the weights
            (their decay is divided by ``bias_lr_scale``, as airbench does); off: they are
            not decayed.
        stem_bias_epochs: for models with a data-initialised stem (``stem_bias``), train
            its bias like a weight (the backbone's learning rate, not ``bias_lr_scale``
            times it; decayed) for this many epochs, then freeze it (airbench: 3); ``None``:
            it is an ordinary bias throughout.
        cutout: side of the square cut out of each training image [pixels] (see
            :func:`~rkdsc_core.data.cutout`); 0: none.
        whiten_images: for models with a data-initialised stem (``init_whitening``), the
            number of training images it is computed from: a sample seeded by ``seed``
            (not the first ones, which in a class-sorted source are one class).
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        ema_decay: keep an exponential moving average of the weights and BatchNorm
            statistics, updated after every step (``ema = d * ema + (1 - d) * weights``,
            starting from the first step's weights, with ``d`` warmed up as
            ``min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates): it is what is
            evaluated and saved. Its horizon is about ``1 / (1 - ema_decay)`` steps; 0: off.
        lookahead: every 5 steps pull a slow copy of the weights and BatchNorm statistics
            towards the trained ones and reset the trained ones to it; the slow copy keeps
            ``0.95**5 * (t / total)**3`` of itself at step ``t``, so it follows less and
            less closely; training ends on the slow copy (:class:`Lookahead`, on airbench's
            schedule). Not with ``ema_decay``.
        eval_batch_size: images per evaluation batch.
    """

    model: str = "fastnet-cifar"
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    optimizer: Literal["sgd", "adamw"] = "sgd"
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.15
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    channels_last: bool = True
    flip_tta: bool = True
    translate_tta: bool = False
    seed: int = 0
    eval_images: int | None = None
    freeze_backbone_epochs: int = 0
    backbone_lr_scale: float = 1.0
    bias_lr_scale: float = 1.0
    crop_padding: int = 4
    pad_mode: Literal["zeros", "reflect"] = "zeros"
    decay_biases: bool = False
    stem_bias_epochs: int | None = None
    cutout: int = 0
    whiten_images: int = 5000
    grad_clip: float | None = None
    ema_decay: float = 0.0
    lookahead: bool = False
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.model == "ensemble":
            raise ValueError(
                "an ensemble is not trained as one: train each member with `rkdsc train "
                "teacher`, then join them with `rkdsc models ensemble`"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.div_factor < 1 or self.final_div_factor < 1:
            raise ValueError(
                f"need lr > 0, div_factor >= 1 and final_div_factor >= 1, got {self.lr}, "
                f"{self.div_factor}, {self.final_div_factor}"
            )
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lookahead and self.ema_decay:
            raise ValueError("lookahead and ema_decay are two weight averages: pick one")
        if self.translate_tta and not self.flip_tta:
            raise ValueError("translate_tta adds views to flip_tta: set flip_tta too")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.stem_bias_epochs is not None and self.stem_bias_epochs < 0:
            raise ValueError(f"stem_bias_epochs must be >= 0 or None, got {self.stem_bias_epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        nonneg: tuple[str, ...] = ("seed", "freeze_backbone_epochs", "backbone_lr_scale")
        nonneg += ("bias_lr_scale", "crop_padding", "cutout")
        if any(getattr(self, name) < 0 for name in nonneg):
            raise ValueError(f"{', '.join(nonneg)} must be >= 0")
        if self.whiten_images < 1:
            raise ValueError(f"whiten_images must be >= 1, got {self.whiten_images}")
        if self.eval_images is not None and self.eval_images < 1:
            raise ValueError(f"eval_images must be >= 1 or None (all), got {self.eval_images}")


_SCRATCH: dict[str, Any] = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "epochs": 30}
_FINETUNE: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "momentum": 0.9,
    "warmup_fraction": 0.1,
}

#: Per-family defaults applied by :func:`teacher_config` before the caller's overrides.
TEACHER_PRESETS: dict[str, dict[str, Any]] = {
    "resnet18-cifar": dict(_SCRATCH),
    "resnet18-cifar-w32": dict(_SCRATCH),
    # ImageNet-pretrained: 1 epoch head-only, then the whole net at 0.3x the head's rate.
    "efficientnet-lite0": _FINETUNE
    | {"epochs": 10, "freeze_backbone_epochs": 1, "backbone_lr_scale": 0.3, "batch_size": 128},
    # CLIP: 1 epoch linear probe, then the tower at 1/100 of the head's rate (1e-5).
    "clip-vit-b32": _FINETUNE
    | {"epochs": 5, "freeze_backbone_epochs": 1, "backbone_lr_scale": 0.01, "grad_clip": 1.0},
    "clip-vit-tiny": _FINETUNE | {"epochs": 5, "freeze_backbone_epochs": 1},
    # Jordan's (2024) airbench recipe in mean-loss terms: lr 1.5 and decay 2e-3 / lr per
    # step at batch 1024, momentum 0.85, norm shifts at 64x; warm-up from 0.2 lr over 23%.
    # Longer than airbench's 10 epochs, with pad-4 crops and a lower final rate: 15 epochs
    # of pad-2 crops ending at lr/15 overfit here (97.9% train, 90.45% test).
    "fastnet-cifar": {
        "optimizer": "sgd",
        "epochs": 20,
        "batch_size": 1024,
        "lr": 1.5,
        "momentum": 0.85,
        "weight_decay": 2e-3 / 1.5,
        "bias_lr_scale": 64.0,
        "label_smoothing": 0.2,
        "crop_padding": 4,
        "warmup_fraction": 0.23,
        "div_factor": 5.0,
        "final_div_factor": 20.0,
        "eval_batch_size": 1000,
    },
}


def teacher_config(
    model: str | None = None, *, recipe: dict[str, Any] | None = None, **overrides: Any
) -> TeacherTrainConfig:
    """The preset of ``model``'s family (:data:`TEACHER_PRESETS`), then ``overrides``.

    ``recipe`` (a recorded run's fields, :func:`load_teacher_recipe`) replaces the preset:
    the run is rebuilt as it was, ``model`` defaults to its model (another is an error),
    and ``model_overrides`` are merged into its own. Fields a recipe lacks (it predates
    them) take the :class:`TeacherTrainConfig` defaults, which keep older behaviour.
    ``None`` overrides keep the preset (so CLI flags can be passed straight through).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if recipe is None:
        name = model or "fastnet-cifar"
        return TeacherTrainConfig(model=name, **(TEACHER_PRESETS.get(name, {}) | given))
    base = dict(recipe)
    name = str(base.pop("model"))
    if model is not None and model != name:
        raise ValueError(f"the recipe trains {name}, not {model}; drop the model or the recipe")
    if "model_overrides" in given:
        given["model_overrides"] = dict(base.get("model_overrides", {})) | given["model_overrides"]
    return TeacherTrainConfig(model=name, **(base | given))


def load_teacher_recipe(path: Path | str) -> dict[str, Any]:
    """The :class:`TeacherTrainConfig` fields a teacher run recorded, to train it again.

    ``path``: a teacher manifest (``RUN/teacher.json``, ``docs/results/teacher/*.json``:
    its ``extra.training.config``), a run's ``config.json`` (its ``teacher``), or a JSON
    object of the fields themselves.

    Raises:
        ValueError: unreadable JSON, no recipe in it, or fields this version does not know.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read a recipe from {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{path} holds no teacher recipe (a JSON object)")
    recipe = doc.get("extra", {}).get("training", {}).get("config") or doc.get("teacher") or doc
    if recipe is doc and "weights_sha256" in doc:  # a checkpoint manifest, not a training run's
        raise ValueError(
            f"{path} is a checkpoint manifest ({doc.get('model')}) that records no training "
            "recipe: an ensemble's (joined from trained members, not trained), or one "
            "written before recipes were recorded"
        )
    if not isinstance(recipe, dict) or "model" not in recipe:
        raise ValueError(
            f"{path} holds no teacher recipe: expected a teacher manifest, a run's "
            "config.json or an object of TeacherTrainConfig fields with a `model`"
        )
    known = {f.name for f in dataclasses.fields(TeacherTrainConfig)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"{path}: fields this version does not know: {', '.join(unknown)}")
    return dict(recipe)


def lr_at(step: int, total: int, cfg: TeacherTrainConfig) -> float:
    """One-cycle learning rate at ``step`` of ``total`` (pure function).

    Linear warm-up from ``lr / div_factor`` to ``lr`` over ``warmup_fraction`` of the
    steps, then cosine annealing to ``lr / (div_factor * final_div_factor)``.
    """
    start = cfg.lr / cfg.div_factor
    end = start / cfg.final_div_factor
    warm = max(1, int(cfg.warmup_fraction * total))
    if step < warm:
        return start + (cfg.lr - start) * step / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return end + (cfg.lr - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


_Tensors = tuple[Tensor, ...] | list[Tensor]


def _ema_update(decay: float) -> Callable[[_Tensors, _Tensors, Tensor | int], None]:
    """The weight average's update for :class:`~torch.optim.swa_utils.AveragedModel`.

    Float tensors move towards the model's by ``1 - d`` with the warmed-up decay
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (early weights fade fast);
    integer buffers (BatchNorm's batch counts) are copied, not averaged.
    """

    @torch.no_grad()
    def update(averaged: _Tensors, current: _Tensors, n: Tensor | int) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point() or a.is_complex():
                a.lerp_(c, 1.0 - d)
            else:
                a.copy_(c)

    return update


def build_teacher(cfg: TeacherTrainConfig, num_classes: int) -> Backbone:
    """A fresh teacher shaped by ``cfg`` with a ``num_classes``-way head."""
    model = create_model(cfg.model, **({"num_classes": num_classes} | cfg.model_overrides))
    if not isinstance(model, Backbone):
        raise TypeError(f"{cfg.model} is not a Backbone (an image classifier); pick a teacher")
    return model


def predict_flip_tta(model: nn.Module, images: Tensor) -> Tensor:
    """Mean logits of ``images`` and their left-right mirror images.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        ``[batch, num_classes]`` float32.
    """
    out: Tensor = 0.5 * (model(images) + model(images.flip(3)))
    return out


def predict_tta(model: nn.Module, images: Tensor, *, translate: bool = False) -> Tensor:
    """Flip TTA (:func:`predict_flip_tta`); with ``translate``, its mean with the flip TTA of
    ``images`` shifted one pixel up-left and one pixel down-right (reflect padding), the two
    shifts weighing half together: six views in all.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        ``[batch, num_classes]`` float32.
    """
    logits = predict_flip_tta(model, images)
    return _with_shifts(model, images, logits) if translate else logits


def _with_shifts(model: nn.Module, images: Tensor, flipped: Tensor) -> Tensor:
    """``flipped`` (the flip TTA of ``images``) averaged with the flip TTA of ``images``
    shifted by one pixel up-left and down-right (reflect padding) at a quarter each."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifts = (padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2])
    out: Tensor = 0.5 * flipped
    for x in shifts:
        out = out + 0.25 * predict_flip_tta(model, x)
    return out


class Lookahead(nn.Module):
    """Lookahead weight averaging on airbench's schedule (Zhang et al., 2019; Jordan, 2024).

    Holds a slow copy of ``model``'s floating-point state (weights and BatchNorm
    statistics). After every ``every``-th step of ``total``, :meth:`step` moves the slow
    copy towards the model, keeping ``keep = 0.95**5 * (t / total)**3`` of itself at step
    ``t`` (0 early on: the slow copy just follows; 0.77 at the end), and resets the model
    to it. After the last step the model is reset to the slow copy as it stands (the up to
    ``every - 1`` steps since the last pull are dropped, as in airbench). Saved and resumed
    with the training state.

    Args:
        model: the module being trained (its state is copied now).
        total: the run's steps.
        every: steps between pulls.
    """

    def __init__(self, model: nn.Module, total: int, every: int = 5) -> None:
        super().__init__()
        if total < 1 or every < 1:
            raise ValueError(f"need total >= 1 and every >= 1, got {total}, {every}")
        self.total, self.every = total, every
        self.slow = copy.deepcopy(model)
        self.slow.requires_grad_(False)

    def keep(self, step: int) -> float:
        """The share of itself the slow copy keeps at a pull after ``step`` (1-based)."""
        return 0.95**5 * (min(step, self.total) / self.total) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimisation step ``step`` (1-based) of ``model``; a no-op between pulls."""
        pull, last = step % self.every == 0, step >= self.total
        if not (pull or last):
            return
        keep = self.keep(step) if pull else 1.0  # the last step alone: back to the slow copy
        slow = self.slow.state_dict()
        for name, fast in model.state_dict().items():
            if fast.is_floating_point():
                slow[name].lerp_(fast, 1.0 - keep)
                fast.copy_(slow[name])


@torch.no_grad()
def evaluate_teacher(
    model: nn.Module,
    data: ImageDataset,
    *,
    limit: int | None = None,
    flip_tta: bool = True,
    translate_tta: bool = False,
    batch_size: int = 256,
    channels_last: bool = False,
    dist: DistInfo | None = None,
) -> dict[str, float]:
    """Top-1 accuracy on ``data`` (a fixed sample of ``limit`` images, or all of them).

    ``flip_tta``/``translate_tta``: the views of the first figure (:func:`predict_tta`).

    Under DDP each rank scores its shard of the images and the counts are summed.

    Returns:
        ``{"test_accuracy": ..., "test_accuracy_single_view": ...}``: the first with TTA
        when ``flip_tta`` (else the same as the second), both in [0, 1]; with
        ``translate_tta`` also ``"test_accuracy_flip_tta"``, the two-view figure.
    """
    if translate_tta and not flip_tta:
        raise ValueError("translate_tta adds views to flip_tta: set flip_tta too")
    device = next(model.parameters()).device
    info = dist if dist is not None else DistInfo.single(device)
    subset = data if limit is None or limit >= len(data) else data.sample(limit)
    loader = BatchLoader(subset, batch_size, rank=info.rank, world_size=info.world_size)
    was_training = model.training
    model.eval()
    # correct: single view, TTA, flip only (with translate_tta); seen
    counts = torch.zeros(4, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        counts[0] += int((logits.argmax(1) == y).sum())
        if flip_tta:
            mean = 0.5 * (logits + model(x.flip(3)))
            if translate_tta:
                counts[2] += int((mean.argmax(1) == y).sum())
                mean = _with_shifts(model, x, mean)
            counts[1] += int((mean.argmax(1) == y).sum())
        counts[3] += len(y)
    model.train(was_training)
    counts = all_reduce_sum(counts, info)
    seen = max(1.0, float(counts[3]))
    single = float(counts[0]) / seen
    out = {
        "test_accuracy": float(counts[1]) / seen if flip_tta else single,
        "test_accuracy_single_view": single,
    }
    if translate_tta:
        out["test_accuracy_flip_tta"] = float(counts[2]) / seen
    return out


def _is_head(name: str) -> bool:
    return name == "head" or name.startswith("head.")


def _set_backbone_trainable(model: nn.Module, trainable: bool, fixed: set[str]) -> None:
    """Freeze or unfreeze all but the head; the ``fixed`` parameters (a data-set stem, norm
    scales held at 1: frozen by the model itself) stay frozen either way."""
    if not hasattr(model, "head"):
        raise ValueError(
            f"freeze_backbone_epochs needs a model with a `head` module; "
            f"{type(model).__name__} has none"
        )
    for name, p in model.named_parameters():
        if not _is_head(name) and name not in fixed:
            p.requires_grad_(trainable)


def _train_mode(model: nn.Module, frozen: bool) -> None:
    # Frozen parts run in eval mode: BatchNorm statistics, dropout and drop-connect fixed.
    model.train()
    if frozen:
        for name, child in model.named_children():
            params = list(child.parameters())
            if not _is_head(name) and params and not any(p.requires_grad for p in params):
                child.eval()


def _make_optimizer(
    model: nn.Module, cfg: TeacherTrainConfig, stem_bias: nn.Parameter | None = None
) -> torch.optim.Optimizer:
    """Groups by (head or not, weight or bias); ``stem_bias`` counts as a weight."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((_is_head(name), p.ndim >= 2 or p is stem_bias), []).append(p)
    bias_decay = (
        cfg.weight_decay / cfg.bias_lr_scale if cfg.decay_biases and cfg.bias_lr_scale else 0.0
    )
    param_groups: list[dict[str, Any]] = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if weight else bias_decay,
            "lr_scale": (1.0 if head else cfg.backbone_lr_scale)
            * (1.0 if weight else cfg.bias_lr_scale),
        }
        for (head, weight), params in sorted(groups.items())
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def _jsonable(cfg: TeacherTrainConfig) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return out


def _save_config(model: nn.Module) -> Any:
    # The saved teacher holds its trained weights: rebuilding it must not fetch pretrained ones.
    cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) and hasattr(cfg, "pretrained"):
        return dataclasses.replace(cfg, pretrained=False)
    return cfg


def train_teacher(
    cfg: TeacherTrainConfig,
    train: ImageDataset,
    test: ImageDataset,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    dist: DistInfo | None = None,
    max_steps: int | None = None,
    command: str | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """Train a teacher, checkpointing every epoch to ``out_dir/state``; resumes from it.

    At the end rank 0 writes the model to ``out_dir/teacher`` (:func:`save_checkpoint`:
    ``teacher.safetensors`` + ``teacher.json`` with the dataset checksum, test accuracy,
    history and command).

    Args:
        device: where to compute when ``dist`` is not given.
        dist: this process's place in a DDP job (:func:`~rkdsc_core.train.ddp.init_distributed`);
            default: the initialised process group, if any, else one process on ``device``.
        max_steps: stop after this many optimisation steps in all (for tests); the epoch
            in progress is then checkpointed as finished.
        command: recorded in the teacher's manifest (default: this process's argv).

    Returns:
        the trained model (eval mode; with ``ema_decay``, the weight average, which is also
        what was scored each epoch and saved) and a summary: ``history`` (per epoch: train loss
        and accuracy, test accuracy with and without flip TTA, seconds), ``wall_seconds``,
        ``test_accuracy``, ``config`` and ``checkpoint`` (the manifest path).

    Raises:
        ValueError: ``out_dir/state`` was written with another config.
    """
    info = dist if dist is not None else current_dist(device)
    dev = info.device
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)  # parameter initialisation (and the new head) only
    model = build_teacher(cfg, len(train.classes)).to(dev)
    init_whitening = getattr(model, "init_whitening", None)
    if callable(init_whitening):  # the same sample on every rank: the same stem
        whiten = train.images[train.sample_indices(cfg.whiten_images, seed=cfg.seed)]
        init_whitening(to_tensor(whiten).to(dev))
    channels_last = cfg.channels_last and (
        training_memory_format(model, dev) is torch.channels_last
    )
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fixed = {name for name, p in model.named_parameters() if not p.requires_grad}
    stem_bias: nn.Parameter | None = None
    if cfg.stem_bias_epochs is not None:
        stem_bias = getattr(model, "stem_bias", None)
        if not isinstance(stem_bias, nn.Parameter):
            raise ValueError(
                f"stem_bias_epochs needs a model with a data-initialised stem (`stem_bias`, "
                f"as fastnet-cifar); {cfg.model} has none"
            )
    opt = _make_optimizer(model, cfg, stem_bias)
    ema = (
        AveragedModel(model, multi_avg_fn=_ema_update(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    loader = train_loader(
        train,
        cfg.batch_size,
        info,
        seed=cfg.seed,
        augment=True,
        crop_padding=cfg.crop_padding,
        pad_mode=cfg.pad_mode,
        cutout_size=cfg.cutout,
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training split ({len(train)} images) is smaller than one global batch "
            f"({cfg.batch_size}); lower batch_size"
        )
    total = cfg.epochs * len(loader)
    lookahead = Lookahead(model, total) if cfg.lookahead else None
    averages: dict[str, nn.Module] = {"ema": ema} if ema is not None else {}
    if lookahead is not None:
        averages["lookahead"] = lookahead
    loop = EpochLoop(
        out_dir / "state", model=model, optimizer=opt, config=_jsonable(cfg), epochs=cfg.epochs,
        seed=cfg.seed, info=info, max_steps=max_steps, extra=averages or None, logger=log,
        defaults=_jsonable(TeacherTrainConfig()), progress={"world_size": info.world_size},
    )  # fmt: skip
    resumed_size = loop.resumed.get("world_size", 1)
    if loop.start_epoch and resumed_size != info.world_size and info.is_main:
        log.warning(
            "resuming a run of world size %s with %d processes: data order and "
            "augmentation change from here on",
            resumed_size,
            info.world_size,
        )
    ddp_model: nn.Module | None = None
    phase: tuple[bool, bool] | None = None  # (backbone frozen, stem bias frozen)
    for epoch in loop.epochs(loader):
        stem_frozen = cfg.stem_bias_epochs is not None and epoch >= cfg.stem_bias_epochs
        if phase != (epoch < cfg.freeze_backbone_epochs, stem_frozen):
            phase = (epoch < cfg.freeze_backbone_epochs, stem_frozen)
            if cfg.freeze_backbone_epochs:
                _set_backbone_trainable(model, not phase[0], fixed)
            if stem_bias is not None:  # frozen with the backbone too
                stem_bias.requires_grad_(not stem_frozen and not phase[0])
            ddp_model = None  # drop the old DDP reducer (its hooks) before wrapping again
            gc.collect()
            ddp_model = wrap_ddp(model, info)
        frozen = phase[0]
        assert ddp_model is not None
        _train_mode(model, frozen)
        # loss * n, correct, n: kept on the device, read once per epoch (and by the bar)
        sums = device_sums(3, dev)
        for x, y in loop.batches(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            lr = lr_at(loop.step, total, cfg)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = ddp_model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            if lookahead is not None:
                lookahead.step(model, loop.step + 1)
            sums[0] += loss.detach().to(sums.dtype) * len(y)  # in float64, as it always was
            sums[1] += (logits.detach().argmax(1) == y).sum()
            sums[2] += len(y)
            loop.postfix(loss=lambda s=sums: f"{float(s[0] / s[2]):.3f}", lr=f"{lr:.2e}")
        broadcast_buffers(model, info)
        if ema is not None:  # the averaged BatchNorm statistics are each rank's own
            broadcast_buffers(ema.module, info)
        sums = all_reduce_sum(sums, info)
        scored = ema.module if ema is not None else model
        metrics = evaluate_teacher(
            scored,
            test,
            limit=cfg.eval_images,
            flip_tta=cfg.flip_tta,
            translate_tta=cfg.translate_tta,
            batch_size=cfg.eval_batch_size,
            channels_last=channels_last,
            dist=info,
        )
        seen = max(1.0, float(sums[2]))
        row = {"train_loss": float(sums[0]) / seen, "train_accuracy": float(sums[1]) / seen}
        tta = (
            (" (flip + shift TTA)" if cfg.translate_tta else " (flip TTA)") if cfg.flip_tta else ""
        )
        loop.end_epoch(
            row | metrics,
            f"epoch {{epoch}}/{cfg.epochs}: loss {{train_loss:.4f}}, train accuracy "
            f"{{train_accuracy:.4f}}, test accuracy {{test_accuracy:.4f}}{tta} ({{seconds:.0f}} s)",
        )
    history, wall = loop.history, loop.wall
    if ema is not None:
        model = cast(Backbone, ema.module)  # the averaged copy of the Backbone
    model.eval()
    last = history[-1] if history else {}
    summary: dict[str, Any] = {
        "history": history,
        "wall_seconds": wall,
        "test_accuracy": last.get("test_accuracy"),
        "config": _jsonable(cfg),
        "world_size": info.world_size,
    }
    teacher_path = out_dir / "teacher"
    if info.is_main:
        manifest = save_checkpoint(
            teacher_path,
            model,
            name=cfg.model,
            config=_save_config(model),
            dataset={"name": train.name, "sha256": train.source_sha256},
            metrics={
                "test_accuracy": last.get("test_accuracy"),
                "test_accuracy_single_view": last.get("test_accuracy_single_view"),
                "flip_tta": cfg.flip_tta,
                "translate_tta": cfg.translate_tta,
                "test_images": cfg.eval_images or len(test),
                "epochs": last.get("epoch", 0),
                "wall_seconds": wall,
                "history": history,
            },
            extra={"training": {"config": _jsonable(cfg), "world_size": info.world_size}},
            command=command,
        )
        log.info("wrote %s", manifest)
    barrier(info)
    summary["checkpoint"] = str(checkpoint_paths(teacher_path)[1])
    return model, summary
