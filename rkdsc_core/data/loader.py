"""``BatchLoader``: seeded, shardable batches of float image tensors from an ``ImageDataset``."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from rkdsc_core.data.augment import check_pad_mode, cutout, random_crop_flip
from rkdsc_core.data.dataset import ImageDataset
from rkdsc_core.data.tensor import to_tensor

__all__ = ["BatchLoader", "epoch_generator"]

_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def epoch_generator(seed: int, epoch: int, *stream: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded from ``(seed, epoch, *stream)``.

    The integers are mixed by ``numpy.random.SeedSequence``, so nearby seeds/epochs give
    unrelated streams; the global RNG is never touched. SeedSequence splits integers of
    2**32 and more into 32-bit words and pads with zeros, so ``(2**32, 0)`` gives the stream
    of ``(0, 1)`` and ``(s, e)`` that of ``(s, e, 0)``: keep seeds below 2**32, and use
    stream ids of one length per purpose (the recipes do).
    """
    values = (seed, epoch, *stream)
    if any(v < 0 for v in values):
        raise ValueError(f"seed, epoch and stream ids must be >= 0, got {seed}, {epoch}, {stream}")
    state = np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


class BatchLoader:
    """Iterate over a dataset in batches, in the main process, fully vectorised.

    Each epoch's order comes from a generator seeded with ``(seed, epoch)`` (the same on
    every rank); augmentation draws from ``(seed, epoch, rank)``. Call :meth:`set_epoch`
    before each epoch, as with ``DistributedSampler``.

    Sharding: rank ``r`` of ``world_size`` takes positions ``r, r + world_size, ...`` of the
    epoch's order, so the ranks together cover every index exactly once. With
    ``drop_last=True`` the order is first cut to a multiple of ``world_size`` and only full
    batches are yielded, so every rank runs the same number of steps (use this under DDP).

    Args:
        dataset: images ``[N, H, W, C]`` uint8, labels ``[N]`` int64.
        batch_size: images per batch.
        shuffle: draw a new permutation each epoch (else dataset order).
        drop_last: drop the last, short batch (and the sharding remainder).
        augment: apply :func:`random_crop_flip` (pad, crop, flip), then :func:`cutout`
            when ``cutout_size`` > 0.
        crop_padding: padding of the random crop [pixels per side]; 0: flips only.
        pad_mode: how the crop's border is filled, ``"zeros"`` or ``"reflect"`` (see
            :func:`random_crop_flip`).
        cutout_size: side of the cutout square [pixels]; 0: no cutout.
        seed: base seed, >= 0.
        rank: this process's shard, ``0 <= rank < world_size``.
        world_size: number of shards.
        device: where batches are put (uint8 is moved first, then converted).

    Outputs (per iteration):
        images ``[B, 3, H, W]`` float32 in [0, 1]; labels ``[B]`` int64.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        crop_padding: int = 4,
        pad_mode: str = "zeros",
        cutout_size: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got rank {rank}, "
                f"world_size {world_size}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0 pixels, got {crop_padding}")
        self.crop_padding = crop_padding
        side = min(dataset.images.shape[1:3])  # [N, H, W, C], checked by ImageDataset
        check_pad_mode(pad_mode, crop_padding, side)
        self.pad_mode = pad_mode
        if not 0 <= cutout_size <= side:
            raise ValueError(
                f"cutout_size must be in [0, {side}] pixels (the image side), got {cutout_size}"
            )
        if cutout_size and not augment:
            raise ValueError("cutout_size needs augment=True (cutout is a training augmentation)")
        self.cutout_size = cutout_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def indices(self) -> npt.NDArray[np.int64]:
        """``[M]`` int64: this rank's dataset indices for the current epoch, in batch order."""
        n = len(self.dataset)
        if self.shuffle:
            g = epoch_generator(self.seed, self.epoch, _SHUFFLE_STREAM)
            order = torch.randperm(n, generator=g).numpy()
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[: (n // self.world_size) * self.world_size]
        shard: npt.NDArray[np.int64] = order[self.rank :: self.world_size].astype(np.int64)
        if self.drop_last:
            shard = shard[: (len(shard) // self.batch_size) * self.batch_size]
        return shard

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.drop_last:
            return (n // self.world_size) // self.batch_size
        m = len(range(self.rank, n, self.world_size))
        return math.ceil(m / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        shard = self.indices()
        gen = (
            epoch_generator(self.seed, self.epoch, _AUGMENT_STREAM, self.rank)
            if self.augment
            else None
        )
        images_np, labels_np = self.dataset.images, self.dataset.labels
        for start in range(0, len(shard), self.batch_size):
            idx = shard[start : start + self.batch_size]
            images = torch.from_numpy(images_np[idx]).to(self.device, non_blocking=True)
            if gen is not None:  # crop/flip the uint8 batch: a quarter of the bytes of float
                nchw = random_crop_flip(
                    images.permute(0, 3, 1, 2),
                    generator=gen,
                    padding=self.crop_padding,
                    pad_mode=self.pad_mode,
                )
                if self.cutout_size:  # drawn after the crops: cutout 0 keeps older streams
                    nchw = cutout(nchw, generator=gen, size=self.cutout_size)
                images = nchw.permute(0, 2, 3, 1)
            x = to_tensor(images)
            labels = torch.from_numpy(labels_np[idx]).to(self.device, non_blocking=True)
            yield x, labels
