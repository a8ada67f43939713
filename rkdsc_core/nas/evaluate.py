"""The evaluation protocol of the lambda table: every genotype gets the same short CE training."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.models.complexity import count_macs, count_parameters
from rkdsc_core.models.genotypes import Genotype, genotype_to_dict
from rkdsc_core.models.student import DartsStudent, StudentConfig
from rkdsc_core.nas.search import lr_at
from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    current_dist,
    shard_batch_size,
    wrap_ddp,
)

__all__ = [
    "StudentEvalConfig",
    "build_student",
    "evaluate_genotype",
    "student_complexity",
    "train_student_plain",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentEvalConfig:
    """How every searched genotype is built and trained for the lambda table.

    Attributes:
        C, layers, token_dim, input_size: the fixed ``darts-student`` shape every genotype
            is built at (so parameter counts compare like with like); C=16, 5 cells is the
            link's student (``LinkTrainConfig``).
        epochs, batch_size, lr, weight_decay, label_smoothing: AdamW, cosine from ``lr``
            to 0, cross-entropy only (no teacher, no channel).
        augment: random crop + flip while training.
        train_subset: seeded number of training images (``None``: all).
        eval_images: seeded number of evaluation images (``None``: all).
        seed: initialisation and batch order.
    """

    C: int = 16
    layers: int = 5
    token_dim: int = 128
    input_size: int = 32
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    train_subset: int | None = 10_000
    eval_images: int | None = 2000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dataclasses.asdict(self)


def build_student(genotype: Genotype, cfg: StudentEvalConfig, num_classes: int) -> DartsStudent:
    """The ``darts-student`` of ``genotype`` at ``cfg``'s fixed shape (seeded init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return DartsStudent(
            StudentConfig(
                genotype=genotype_to_dict(genotype),
                C=cfg.C,
                layers=cfg.layers,
                token_dim=cfg.token_dim,
                input_size=cfg.input_size,
                num_classes=num_classes,
            )
        )


def student_complexity(
    genotype: Genotype, cfg: StudentEvalConfig, num_classes: int = 10
) -> dict[str, int]:
    """``{"params", "macs"}`` of the student ``genotype`` builds (MACs per image)."""
    model = build_student(genotype, cfg, num_classes)
    return {
        "params": count_parameters(model),
        "macs": count_macs(model, *model.example_inputs(1)),
    }


def train_student_plain(
    genotype: Genotype,
    train: ImageDataset,
    val: ImageDataset,
    cfg: StudentEvalConfig,
    *,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
    dist: DistInfo | None = None,
) -> dict[str, Any]:
    """Evaluation protocol: train ``genotype``'s student with cross-entropy, report accuracy.

    The same recipe for every row of the lambda table, so accuracies compare the
    architectures, not the training. Not checkpointed (it is meant to be short). Under a
    process group (``dist``, default :func:`current_dist`) it trains with DDP, the batch
    being the global one, and the accuracy is measured on shards and summed.

    Returns:
        ``{"params", "macs", "val_accuracy", "history", "eval_images", "wall_seconds"}``
        (training and scoring time).
    """
    t0 = time.time()
    info = dist if dist is not None else current_dist(device)
    model = build_student(genotype, cfg, len(train.classes))
    complexity = {
        "params": count_parameters(model),
        "macs": count_macs(model, *model.example_inputs(1)),
    }
    model.to(info.device)
    net = wrap_ddp(model, info)
    data = train if cfg.train_subset is None else train.sample(cfg.train_subset, seed=cfg.seed)
    loader = BatchLoader(
        data,
        shard_batch_size(min(cfg.batch_size, len(data)), info),
        shuffle=True,
        drop_last=True,
        augment=cfg.augment,
        seed=cfg.seed,
        device=info.device,
        rank=info.rank,
        world_size=info.world_size,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    step, history = 0, []
    model.train()
    for epoch in range(cfg.epochs):
        t_epoch = time.time()
        loader.set_epoch(epoch)
        running, n = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"eval-train {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not info.is_main,
        )
        for x, y in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg.lr)
            loss = F.cross_entropy(net(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            running += float(loss.detach())
            n += 1
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        history.append(
            {
                "epoch": epoch + 1,
                "loss": all_reduce_mean(running / max(1, n), info),
                "seconds": time.time() - t_epoch,
                "compiled": info.compile,
            }
        )
        if max_steps is not None and step >= max_steps:
            break
    broadcast_buffers(model, info)
    accuracy, count = _accuracy(model, val, cfg, info)
    if info.is_main:
        log.info("evaluation protocol: %d params, accuracy %.4f", complexity["params"], accuracy)
    wall = time.time() - t0
    return complexity | {
        "val_accuracy": accuracy,
        "history": history,
        "eval_images": count,
        "wall_seconds": wall,
    }


def evaluate_genotype(
    genotype: Genotype,
    train: ImageDataset,
    val: ImageDataset,
    cfg: StudentEvalConfig,
    folder: Path | str,
    *,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
    dist: DistInfo | None = None,
) -> dict[str, Any]:
    """:func:`train_student_plain`, kept in ``folder/eval-seed{cfg.seed}.json``.

    The file is reused when it holds the same genotype, protocol, data (name, split, source
    sha256) and ``max_steps``; otherwise the protocol runs and the file is (re)written. So
    seeds of one genotype can run in separate processes, and a sweep picks them up. Under a
    process group every rank trains (DDP) and returns the result; rank 0 writes the file.

    Returns:
        :func:`train_student_plain`'s dict plus ``"seed"``.
    """
    key = {
        "genotype": genotype_to_dict(genotype),
        "eval_config": cfg.to_dict(),
        "train_data": data_key(train),
        "eval_data": data_key(val),
        "max_steps": max_steps,
    }
    path = Path(folder) / f"eval-seed{cfg.seed}.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        if {k: doc.get(k) for k in key} == key:
            log.info("evaluation protocol: reusing %s", path)
            return {k: v for k, v in doc.items() if k not in key}
        log.info("evaluation protocol: %s was made with other settings; rerunning", path)
    info = dist if dist is not None else current_dist(device)
    result = train_student_plain(
        genotype, train, val, cfg, device=device, max_steps=max_steps, dist=info
    )
    result["seed"] = cfg.seed
    if info.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(key | result, indent=2) + "\n")
        tmp.replace(path)
    barrier(info)
    return result


def data_key(data: ImageDataset) -> str:
    """Which split an evaluation ran on: name, split, size and source sha256."""
    return f"{data.name}/{data.split}/{len(data)}/{data.source_sha256}"


@torch.no_grad()
def _accuracy(
    model: DartsStudent, val: ImageDataset, cfg: StudentEvalConfig, info: DistInfo
) -> tuple[float, int]:
    """Accuracy on ``cfg.eval_images`` seeded images of ``val``, each rank scoring a shard."""
    model.eval()
    data = val if cfg.eval_images is None else val.sample(min(cfg.eval_images, len(val)))
    shard = BatchLoader(data, 256, device=info.device, rank=info.rank, world_size=info.world_size)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in shard)
    model.train()
    return all_reduce_sum(correct, info) / max(1, len(data)), len(data)
