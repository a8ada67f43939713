"""DistributedDataParallel plumbing: process-group setup from torchrun's variables, helpers.

Every training recipe takes a :class:`DistInfo`. Without torchrun it describes one process
(rank 0 of 1, no process group) and every helper here is a no-op, so the same loop runs
unchanged on one CPU, one GPU or ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on
GPU). Conventions of the recipes that use it:

* ``batch_size`` in a config is the *global* batch; each rank takes
  ``batch_size / world_size`` (:func:`shard_batch_size`), so the learning-rate recipe
  holds at any world size.
* Data is sharded by ``BatchLoader(rank=, world_size=, drop_last=True)``: every rank runs
  the same number of steps.
* Only rank 0 (``is_main``) writes checkpoints, logs and progress bars; metrics are
  all-reduced; BatchNorm statistics are broadcast from rank 0 (:func:`broadcast_buffers`)
  before evaluating or saving, so every rank holds the same model.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast, overload

import torch
import torch.distributed as tdist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rkdsc_core.data import BatchLoader, ImageDataset, epoch_generator

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "current_dist",
    "init_distributed",
    "seed_epoch",
    "shard_batch_size",
    "train_loader",
    "unwrap",
    "wrap_ddp",
]

log = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) data-parallel job.

    Attributes:
        rank: global rank, ``0 <= rank < world_size``.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process computes on.
        is_main: ``rank == 0``: the process that writes files and logs.
        compile: whether :func:`wrap_ddp` compiles the training forward with
            ``torch.compile`` (inductor). An execution choice like ``device``, not part of
            a recipe: a run may resume with it on or off. Compiled kernels round
            differently and draw dropout masks from inductor's generator (seeded from the
            global one), so weights are not bit-identical to an eager run's.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool
    compile: bool = False

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one member is in use."""
        return self.world_size > 1

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> DistInfo:
        """One process, no process group."""
        return cls(rank=0, world_size=1, local_rank=0, device=torch.device(device), is_main=True)


def _rank_device(device: torch.device | str | None, local_rank: int) -> torch.device:
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank)
    return dev


def init_distributed(
    env: Mapping[str, str],
    *,
    device: torch.device | str | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Join the process group torchrun describes in ``env``, or run as one process.

    Args:
        env: the process environment (the CLI passes ``os.environ``; ``rkdsc_core`` never
            reads it itself). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
            ``MASTER_ADDR`` and ``MASTER_PORT``; without ``WORLD_SIZE`` (or with 1) this
            is a single process and no process group is created.
        device: ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun a bare ``cuda`` becomes
            ``cuda:LOCAL_RANK`` (one GPU per process). The backend is NCCL for CUDA, gloo
            otherwise.
        timeout_s: collective timeout [s] (a crashed peer is reported after this long).

    Returns:
        This process's :class:`DistInfo`. Call :func:`cleanup_distributed` at the end.
    """
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo.single(_rank_device(device, 0))
    missing = [k for k in _TORCHRUN_VARS if k not in env]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
            "`torchrun --nproc_per_node N ...` (or python -m torch.distributed.run)"
        )
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    dev = _rank_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    host = env["MASTER_ADDR"]
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if not tdist.is_initialized():
        tdist.init_process_group(
            backend=backend,
            init_method=f"tcp://{host}:{env['MASTER_PORT']}",
            rank=rank,
            world_size=world,
            timeout=_dt.timedelta(seconds=timeout_s),
        )
    log.info("rank %d of %d on %s (%s)", rank, world, dev, backend)
    return DistInfo(
        rank=rank, world_size=world, local_rank=local_rank, device=dev, is_main=rank == 0
    )


def current_dist(device: torch.device | str = "cpu") -> DistInfo:
    """The :class:`DistInfo` of an already initialised process group, else one process.

    For recipes called without an explicit ``DistInfo``: the rank and world size come from
    ``torch.distributed`` (set up by :func:`init_distributed` or the caller); a bare
    ``cuda`` device becomes ``cuda:LOCAL_RANK`` (torchrun's variable, else the rank).
    """
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        rank = tdist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))  # torchrun's; else one node
        dev = _rank_device(device, local)
        if dev.type == "cuda" and dev.index is not None:
            local = dev.index
        return DistInfo(
            rank=rank,
            world_size=tdist.get_world_size(),
            local_rank=local,
            device=dev,
            is_main=rank == 0,
        )
    return DistInfo.single(device)


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def shard_batch_size(batch_size: int, info: DistInfo) -> int:
    """Per-rank batch for a global ``batch_size``; it must divide by the world size."""
    if batch_size % info.world_size:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must be a multiple of the world "
            f"size {info.world_size}; pick e.g. {batch_size // info.world_size * info.world_size}"
        )
    return batch_size // info.world_size


_GLOBAL_RNG_STREAM = 3  # epoch_generator stream of the per-epoch global-RNG reseed


def seed_epoch(seed: int, epoch: int, info: DistInfo) -> None:
    """Reseed torch's global RNG from ``(seed, epoch, rank)`` at the start of an epoch.

    Dropout and drop-path draw from the global RNG; reseeding it per epoch and rank makes
    a run resumed at an epoch boundary draw what the uninterrupted run drew.
    """
    torch.manual_seed(epoch_generator(seed, epoch, _GLOBAL_RNG_STREAM, info.rank).initial_seed())


def train_loader(
    data: ImageDataset,
    batch_size: int,
    info: DistInfo,
    *,
    seed: int,
    augment: bool,
    crop_padding: int = 4,
    pad_mode: str = "zeros",
    cutout_size: int = 0,
) -> BatchLoader:
    """The shuffled training batches of this rank: ``batch_size`` is the global batch
    (see :func:`shard_batch_size`); incomplete batches are dropped so every rank steps alike.
    ``augment``/``crop_padding``/``pad_mode``/``cutout_size``: see
    :class:`~rkdsc_core.data.BatchLoader`.
    Batches are augmented on this rank's device (``info.device``): the uint8 images are
    copied there first, so a GPU does the crops, not the host; the draws stay on the CPU,
    so the crops are the same on every device (the float conversion may differ in the last
    bit)."""
    return BatchLoader(
        data,
        shard_batch_size(batch_size, info),
        shuffle=True,
        drop_last=True,
        augment=augment,
        crop_padding=crop_padding,
        pad_mode=pad_mode,
        cutout_size=cutout_size,
        seed=seed,
        rank=info.rank,
        world_size=info.world_size,
        device=info.device,
    )


def wrap_ddp(
    model: nn.Module, info: DistInfo, *, find_unused_parameters: bool = False
) -> nn.Module:
    """The module a training loop calls: ``model`` as :class:`DistInfo` says to run it.

    ``DistributedDataParallel(model)`` under a process group, ``model`` itself otherwise;
    then ``torch.compile`` of that when ``info.compile``. The wrapper shares ``model``'s
    parameters: save, evaluate and clip gradients on ``model``, call the wrapper in the
    loop. ``model`` must already be on ``info.device``. Parameters with
    ``requires_grad=False`` at wrapping time are not synchronised: wrap again after
    unfreezing.
    """
    wrapped = model
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused_parameters
        )
    return cast(nn.Module, torch.compile(wrapped)) if info.compile else wrapped


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside :func:`wrap_ddp`'s wrappers (compiled, DDP), or ``model`` itself."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if not info.distributed:
        return
    if info.device.type == "cuda":
        tdist.barrier(device_ids=[info.device.index or 0])
    else:
        tdist.barrier()


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics, ...) to every rank.

    DDP already does this at the start of each training forward; this makes the ranks
    agree after the last step too, before evaluating or saving.
    """
    if not info.distributed:
        return
    for buf in unwrap(model).buffers():
        tdist.broadcast(buf.data, src=0)


@overload
def all_reduce_sum(value: float, info: DistInfo) -> float: ...
@overload
def all_reduce_sum(value: Tensor, info: DistInfo) -> Tensor: ...
def all_reduce_sum(value: float | Tensor, info: DistInfo) -> float | Tensor:
    """Sum of ``value`` over the ranks (``value`` itself for one process).

    Inputs:
        value: a Python number or a tensor of any shape, on any device.
    Outputs:
        the same kind: a float, or a tensor of ``value``'s shape, dtype and device.
    """
    if not info.distributed:
        return float(value) if not isinstance(value, Tensor) else value
    t = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
    # NCCL reduces CUDA tensors only; gloo takes CPU ones.
    work = t.detach().to(info.device, copy=True)
    tdist.all_reduce(work, op=tdist.ReduceOp.SUM)
    if isinstance(value, Tensor):
        return work.to(value.device)
    return float(work.item())


@overload
def all_reduce_mean(value: float, info: DistInfo) -> float: ...
@overload
def all_reduce_mean(value: Tensor, info: DistInfo) -> Tensor: ...
def all_reduce_mean(value: float | Tensor, info: DistInfo) -> float | Tensor:
    """Mean of ``value`` over the ranks (``value`` itself for one process)."""
    if isinstance(value, Tensor):
        total = all_reduce_sum(value, info)
        return total / info.world_size if info.distributed else total
    return all_reduce_sum(float(value), info) / info.world_size
