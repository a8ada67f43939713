"""Pre-stored teacher outputs: logits and pooled features per image and augmented view.

After "pre-stored" distillation (arXiv 2506.13243): the teacher runs once per training
image and per *view* -- view 0 the image itself, views 1..V-1 a crop/flip drawn from
``(seed, view, image index)`` -- and its outputs are stored, so later stages (the
student's distillation, the NAS search, the codec's distillation) never run the teacher.

A stage that trains on the cache asks for ``(image i, view v)``: :func:`augment_view`
produces exactly the pixels the teacher saw (the draw depends only on ``seed``, ``v`` and
``i``, never on the batch an image lands in), and :meth:`TeacherCache.targets` gives the
stored outputs::

    cache = load_teacher_cache("runs/teacher-cache", dataset=train, teacher=ckpt)
    loader = BatchLoader(train, 128, shuffle=True, drop_last=True, seed=seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        g = epoch_generator(seed, epoch, 7)
        idx = loader.indices()
        for start in range(0, len(idx), 128):
            b = cache.batch(train, idx[start : start + 128], cache.draw_views(128, g))
            # b.images, b.labels, b.logits (teacher), b.features (teacher, pooled)

On disk a cache ``NAME`` is ``NAME.safetensors`` (``logits`` ``[V, N, C]`` and
``features`` ``[V, N, D]`` float16, ``labels`` ``[N]`` int64) and ``NAME.json``, the
manifest: the teacher checkpoint's weights sha256, the dataset's fingerprint, views, seed
and padding, and the sha256 of the tensor file. Loading verifies all of them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from rkdsc_core.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_model,
    write_synced,
    write_tensors,
)
from rkdsc_core.data import ImageDataset, to_tensor
from rkdsc_core.models import Backbone

__all__ = [
    "CACHE_FORMAT",
    "CachedBatch",
    "TeacherCache",
    "TeacherCacheError",
    "augment_view",
    "build_teacher_cache",
    "dataset_fingerprint",
    "load_teacher_cache",
    "view_params",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = "rkdsc-teacher-cache"
FORMAT_VERSION = 1

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)

IndexLike = Tensor | npt.NDArray[np.integer[Any]] | list[int]
ViewLike = int | IndexLike


class TeacherCacheError(ValueError):
    """A teacher cache is missing, corrupt, or belongs to another dataset or teacher."""


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # splitmix64's finaliser: a bijective, well-mixing map of 64-bit integers (wraps mod 2^64).
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _as_index_array(values: ViewLike, n: int, what: str) -> npt.NDArray[np.int64]:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim == 0 and n >= 0:
        arr = np.full(n, int(arr), dtype=np.int64)
    if arr.ndim != 1 or (n >= 0 and len(arr) != n) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be an int or a [{n}] integer array, got shape {arr.shape}")
    if len(arr) and int(arr.min()) < 0:
        raise ValueError(f"{what} must be >= 0")
    return arr.astype(np.int64)


def view_params(
    indices: IndexLike, view: ViewLike, seed: int, *, padding: int = 4
) -> tuple[Tensor, Tensor]:
    """The crop offsets and flips of ``view`` of images ``indices`` (view 0: identity).

    Each image's draw is a hash of ``(seed, view, index)``: the same in every process,
    batch and order.

    Inputs:
        indices: ``[B]`` int, dataset positions.
        view: an int, or ``[B]`` int (one view per image).
    Outputs:
        offsets ``[B, 2]`` int64 (row, column) in ``[0, 2 * padding]`` into the zero-padded
        image; flips ``[B]`` bool (mirror left-right).
    """
    if seed < 0 or padding < 0:
        raise ValueError(f"seed and padding must be >= 0, got {seed}, {padding}")
    idx = _as_index_array(indices, -1, "indices")
    views = _as_index_array(view, len(idx), "view")
    with np.errstate(over="ignore"):
        key = _mix(np.full(len(idx), seed, dtype=np.uint64) + _GOLDEN)
        key = _mix(key ^ (views.astype(np.uint64) + _GOLDEN))
        h = _mix(key ^ (idx.astype(np.uint64) * _GOLDEN + _U64(1)))
    span = _U64(2 * padding + 1)
    rows = (h % span).astype(np.int64)
    cols = ((h >> _U64(21)) % span).astype(np.int64)
    flips = ((h >> _U64(42)) & _U64(1)).astype(bool)
    identity = views == 0
    rows[identity], cols[identity], flips[identity] = padding, padding, False
    return torch.from_numpy(np.stack([rows, cols], axis=1)), torch.from_numpy(flips)


def augment_view(
    images: Tensor | npt.NDArray[np.uint8],
    indices: IndexLike,
    view: ViewLike,
    seed: int,
    *,
    padding: int = 4,
) -> Tensor:
    """View ``view`` of dataset images ``indices``: zero-pad, crop back, maybe mirror.

    The same crop/flip as :func:`~rkdsc_core.data.random_crop_flip`, but drawn per image
    from ``(seed, view, index)`` (:func:`view_params`), so the teacher cache and the
    student's training batches see identical pixels. View 0 is the image itself.

    Inputs:
        images: ``[B, H, W, C]`` uint8 (numpy or torch, any device): ``dataset.images[indices]``.
        indices: ``[B]`` int, the images' dataset positions.
        view: an int or ``[B]`` int.
    Outputs:
        ``[B, H, W, C]`` uint8 tensor on the images' device (feed to :func:`to_tensor`).
    """
    if isinstance(images, np.ndarray):  # a writable copy when given a read-only memory map
        images = np.array(images) if not images.flags.writeable else np.ascontiguousarray(images)
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    if x.ndim != 4 or x.dtype != torch.uint8:
        raise ValueError(f"images must be [B, H, W, C] uint8, got {tuple(x.shape)} {x.dtype}")
    offsets, flips = view_params(indices, view, seed, padding=padding)
    if len(offsets) != len(x):
        raise ValueError(f"{len(x)} images but {len(offsets)} indices")
    b, h, w, _ = x.shape
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(x, (0, 0, padding, padding, padding, padding)) if padding else x
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].contiguous()


def dataset_fingerprint(dataset: ImageDataset) -> dict[str, Any]:
    """What identifies a dataset split: name, split, source sha256, size, content sha256.

    ``content_sha256`` hashes the images and labels in order, so a subset or a
    reordering of the same source is told apart.
    """
    h = hashlib.sha256()
    for start in range(0, len(dataset), 4096):
        h.update(np.ascontiguousarray(dataset.images[start : start + 4096]).tobytes())
    h.update(np.ascontiguousarray(dataset.labels).tobytes())
    return {
        "name": dataset.name,
        "split": dataset.split,
        "source_sha256": dataset.source_sha256,
        "num_images": len(dataset),
        "image_shape": list(dataset.image_shape),
        "content_sha256": h.hexdigest(),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _teacher_identity(teacher: Path | str) -> tuple[str, Any]:
    """``(weights sha256, config)`` of checkpoint ``teacher``: the same weights under another
    config (a logit scale) make other outputs."""
    manifest = checkpoint_paths(teacher)[1]
    try:
        doc = json.loads(manifest.read_text())
        return str(doc["weights_sha256"]), doc.get("config")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise TeacherCacheError(
            f"cannot read the teacher checkpoint manifest {manifest}: {e}"
        ) from e


class CachedBatch(NamedTuple):
    """A training batch with its stored teacher outputs.

    Attributes:
        images: ``[B, 3, H, W]`` float32 in [0, 1], the view's pixels.
        labels: ``[B]`` int64.
        logits: ``[B, C]`` float32, the teacher's logits for exactly these pixels.
        features: ``[B, D]`` float32, the teacher's pooled feature (``Backbone.pool``).
        views: ``[B]`` int64, which view each image is.
    """

    images: Tensor
    labels: Tensor
    logits: Tensor
    features: Tensor
    views: Tensor


@dataclass(frozen=True, eq=False)
class TeacherCache:
    """Stored teacher outputs for ``views`` views of every image of one dataset split.

    Attributes:
        logits: ``[views, N, C]`` float16.
        features: ``[views, N, D]`` float16 (pooled teacher features).
        labels: ``[N]`` int64 (the dataset's labels, for a cheap consistency check).
        manifest: the JSON manifest (teacher, dataset fingerprint, views, seed, padding).
    """

    logits: Tensor
    features: Tensor
    labels: Tensor
    manifest: dict[str, Any]

    @property
    def views(self) -> int:
        """Number of views per image (view 0 = un-augmented)."""
        return int(self.logits.shape[0])

    @property
    def num_images(self) -> int:
        """Number of images of the dataset split."""
        return int(self.logits.shape[1])

    @property
    def seed(self) -> int:
        """Seed of the views' crops and flips."""
        return int(self.manifest["seed"])

    @property
    def padding(self) -> int:
        """Zero padding per side before cropping [pixels]."""
        return int(self.manifest["padding"])

    def draw_views(self, batch: int, generator: torch.Generator) -> Tensor:
        """``[batch]`` int64 views drawn uniformly from ``[0, views)`` with ``generator``."""
        return torch.randint(self.views, (batch,), generator=generator)

    def _index(self, indices: IndexLike, views: ViewLike) -> tuple[Tensor, Tensor]:
        idx = torch.from_numpy(_as_index_array(indices, -1, "indices"))
        v = torch.from_numpy(_as_index_array(views, len(idx), "views"))
        if len(idx) and int(idx.max()) >= self.num_images:
            raise IndexError(f"index {int(idx.max())} out of range for {self.num_images} images")
        if len(v) and int(v.max()) >= self.views:
            raise ValueError(f"view {int(v.max())} out of range: the cache holds {self.views}")
        return idx, v

    def targets(self, indices: IndexLike, views: ViewLike) -> tuple[Tensor, Tensor]:
        """The teacher's outputs for ``(indices[b], views[b])``.

        Inputs:
            indices: ``[B]`` int dataset positions; views: an int or ``[B]`` int.
        Outputs:
            logits ``[B, C]`` float32, features ``[B, D]`` float32 (CPU).
        """
        idx, v = self._index(indices, views)
        return self.logits[v, idx].float(), self.features[v, idx].float()

    def images(
        self,
        dataset: ImageDataset,
        indices: IndexLike,
        views: ViewLike,
        *,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """The pixels the teacher saw for ``(indices[b], views[b])``: ``[B, H, W, C]`` uint8
        on ``device`` (default CPU), where the crops are made."""
        idx, v = self._index(indices, views)
        if len(dataset) != self.num_images:
            raise TeacherCacheError(
                f"the dataset has {len(dataset)} images, the cache {self.num_images}"
            )
        raw = torch.from_numpy(dataset.images[idx.numpy()])  # fancy indexing: a fresh copy
        return augment_view(raw.to(device or "cpu"), idx, v, self.seed, padding=self.padding)

    def batch(
        self,
        dataset: ImageDataset,
        indices: IndexLike,
        views: ViewLike,
        *,
        device: torch.device | str | None = None,
    ) -> CachedBatch:
        """Images, labels and stored teacher outputs for ``(indices[b], views[b])``."""
        idx, v = self._index(indices, views)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        logits, features = self.targets(idx, v)
        return CachedBatch(
            images=to_tensor(self.images(dataset, idx, v, device=dev)),
            labels=torch.from_numpy(dataset.labels[idx.numpy()]).to(dev),
            logits=logits.to(dev),
            features=features.to(dev),
            views=v.to(dev),
        )

    def check_dataset(self, dataset: ImageDataset) -> None:
        """Raise :class:`TeacherCacheError` unless ``dataset`` is the cache's split."""
        want = self.manifest["dataset"]
        got = dataset_fingerprint(dataset)
        diff = [k for k in want if want[k] != got.get(k)]
        if diff:
            raise TeacherCacheError(
                f"the teacher cache was built on another dataset: {', '.join(diff)} differ "
                f"(cache: {want['name']} {want['split']}, {want['num_images']} images, source "
                f"{str(want['source_sha256'])[:12]}...; given: {got['name']} {got['split']}, "
                f"{got['num_images']} images, source {got['source_sha256'][:12]}...); "
                f"rebuild it with `rkdsc train cache-teacher`"
            )

    def check_teacher(self, teacher: Path | str) -> None:
        """Raise :class:`TeacherCacheError` unless the cache is from checkpoint ``teacher``."""
        got, config = _teacher_identity(teacher)
        want = self.manifest["teacher"]["weights_sha256"]
        if got != want:
            raise TeacherCacheError(
                f"the teacher cache was built from another teacher (weights sha256 "
                f"{want[:12]}..., {teacher} has {got[:12]}...); rebuild it with "
                f"`rkdsc train cache-teacher --teacher {teacher}`"
            )
        built = self.manifest["teacher"].get("config", config)  # caches before it: sha only
        if built != config:
            raise TeacherCacheError(
                f"the teacher cache was built from the same weights under another config "
                f"({built} vs {teacher}'s {config}); rebuild it with "
                f"`rkdsc train cache-teacher --teacher {teacher}`"
            )


@torch.no_grad()
def build_teacher_cache(
    teacher: Path | str,
    dataset: ImageDataset,
    out_path: Path | str,
    *,
    views: int = 4,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    padding: int = 4,
    is_main: bool = True,
) -> Path:
    """Run the teacher once over every view of every image and store its outputs.

    Args:
        teacher: a teacher checkpoint (``save_checkpoint``; e.g. ``runs/teacher/teacher``).
        dataset: the split to cache (normally the training split).
        out_path: the cache's name: writes ``out_path.safetensors`` and ``out_path.json``.
        views: views per image: view 0 un-augmented, 1..views-1 crop/flip (:func:`augment_view`).
        seed: seed of the views' draws, >= 0.
        batch_size: images per teacher forward.
        device: where the teacher runs.
        padding: zero padding per side for the crops [pixels].
        is_main: under DDP, only the main rank computes and writes; the others return at
            once, before the cache exists (a barrier after the call would have to outwait
            the whole build).

    Returns:
        the manifest path.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1 (view 0 is the image itself), got {views}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    weights_path, manifest_path = checkpoint_paths(out_path)
    if not is_main:
        return manifest_path
    try:
        model = load_model(teacher, device=device)
    except CheckpointError as e:
        raise TeacherCacheError(f"cannot load the teacher: {e}") from e
    if not isinstance(model, Backbone):
        raise TeacherCacheError(f"{teacher} holds a {type(model).__name__}, not a Backbone")
    teacher_doc = json.loads(checkpoint_paths(teacher)[1].read_text())
    fingerprint = dataset_fingerprint(dataset)
    n = len(dataset)
    logits = torch.empty(views, n, model.num_classes, dtype=torch.float16)
    features = torch.empty(views, n, model.feature_dim, dtype=torch.float16)
    # Each finished view is kept under out_path.partial/ until the whole cache is written,
    # so an interrupted run (a large teacher takes minutes per view on a CPU) resumes at the
    # first missing view. A view is reused only if the teacher (its weights, model and
    # config: a logit scale lives in the config), split, seed, padding and format match.
    partial_dir = weights_path.with_name(weights_path.stem + ".partial")
    key = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "teacher_sha256": teacher_doc["weights_sha256"],
            "teacher_model": teacher_doc.get("model"),
            "teacher_config": teacher_doc.get("config"),
            "content_sha256": fingerprint["content_sha256"],
            "seed": seed,
            "padding": padding,
        },
        sort_keys=True,
    )
    bar = tqdm(total=views * n, desc="teacher cache", unit="image", leave=False)
    for v in range(views):
        view_path = partial_dir / f"view-{v}.safetensors"
        done = _read_partial_view(view_path, key)
        if done is not None:
            logits[v], features[v] = done
            bar.update(n)
            log.info("teacher cache: view %d/%d resumed from %s", v + 1, views, view_path)
            continue
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size), dtype=np.int64)
            x = to_tensor(augment_view(dataset.images[idx], idx, v, seed, padding=padding))
            tokens = model.forward_tokens(x.to(device))
            feats, logs = model.pool(tokens).float().cpu(), model.forward_head(tokens).float().cpu()
            feats16, logs16 = feats.half(), logs.half()
            if not (torch.isfinite(feats16).all() and torch.isfinite(logs16).all()):
                raise TeacherCacheError(
                    f"teacher outputs overflow float16 (max |feature| "
                    f"{float(feats.abs().max()):.3g}, max |logit| {float(logs.abs().max()):.3g}, "
                    "float16 holds 65504); the cache stores float16"
                )
            features[v, idx], logits[v, idx] = feats16, logs16
            bar.update(len(idx))
        partial_dir.mkdir(parents=True, exist_ok=True)
        write_tensors(
            {"logits": logits[v].clone(), "features": features[v].clone()},
            view_path,
            {"format": CACHE_FORMAT + "-view", "key": key},
        )
        log.info("teacher cache: view %d/%d done", v + 1, views)
    bar.close()
    tensors = {
        "logits": logits,
        "features": features,
        "labels": torch.from_numpy(np.array(dataset.labels, dtype=np.int64)),
    }
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    write_tensors(tensors, weights_path, {"format": CACHE_FORMAT})
    doc = {
        "format": CACHE_FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": {
            "model": teacher_doc.get("model"),
            "path": str(teacher),
            "weights_sha256": teacher_doc["weights_sha256"],
            "config": teacher_doc.get("config"),
            "metrics": {k: v for k, v in teacher_doc.get("metrics", {}).items() if k != "history"},
        },
        "dataset": fingerprint,
        "views": views,
        "seed": seed,
        "padding": padding,
        "num_classes": model.num_classes,
        "feature_dim": model.feature_dim,
        "dtype": "float16",
        "weights_file": weights_path.name,
        "weights_sha256": _sha256(weights_path),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    tmp_m = manifest_path.with_name(manifest_path.name + ".tmp")
    write_synced(tmp_m, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    os.replace(tmp_m, manifest_path)
    _sync_folder(manifest_path.parent)  # the rename is on disk before the views go
    shutil.rmtree(partial_dir, ignore_errors=True)
    return manifest_path


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power loss (where the OS can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_partial_view(path: Path, key: str) -> tuple[Tensor, Tensor] | None:
    """A finished view's ``(logits [N, C], features [N, D])`` float16 from an interrupted
    :func:`build_teacher_cache`, or None when there is none, or it is unreadable or of
    another teacher/split/seed/padding (``key``, which also fixes N, C and D)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                log.warning("teacher cache: %s is of another teacher or split; redoing it", path)
                return None
            logits, features = f.get_tensor("logits"), f.get_tensor("features")
    except (OSError, SafetensorError) as e:  # truncated or foreign: recompute the view
        log.warning("teacher cache: cannot read %s (%s); redoing it", path, e)
        return None
    return logits, features


def load_teacher_cache(
    path: Path | str,
    *,
    dataset: ImageDataset | None = None,
    teacher: Path | str | None = None,
) -> TeacherCache:
    """Read a cache written by :func:`build_teacher_cache` and verify it.

    Args:
        dataset: if given, must be the split the cache was built on (fingerprint check).
        teacher: if given, a teacher checkpoint whose weights must be the cached teacher's.

    Raises:
        TeacherCacheError: files missing or corrupt, or another dataset or teacher.
    """
    weights_path, manifest_path = checkpoint_paths(path)
    if not manifest_path.is_file() or not weights_path.is_file():
        raise TeacherCacheError(
            f"no teacher cache at {weights_path.with_suffix('')}: expected {weights_path.name} "
            f"and {manifest_path.name} (written by `rkdsc train cache-teacher`)"
        )
    try:
        doc = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise TeacherCacheError(f"manifest {manifest_path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        raise TeacherCacheError(f"{manifest_path} is not a teacher-cache manifest")
    if _sha256(weights_path) != doc.get("weights_sha256"):
        raise TeacherCacheError(f"{weights_path} is corrupt or was replaced (sha256 differs)")
    tensors = load_file(str(weights_path))
    cache = TeacherCache(
        logits=tensors["logits"],
        features=tensors["features"],
        labels=tensors["labels"],
        manifest=doc,
    )
    if cache.views != doc["views"] or cache.num_images != doc["dataset"]["num_images"]:
        raise TeacherCacheError(f"{weights_path} does not match its manifest's shape")
    if dataset is not None:
        cache.check_dataset(dataset)
    if teacher is not None:
        cache.check_teacher(teacher)
    return cache
