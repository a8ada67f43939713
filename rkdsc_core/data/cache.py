"""The decoded-array cache: ``<root>/<dataset>/<sha256[:16]>/<split>-*.npy`` plus a manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rkdsc_core.data._types import SplitArrays
from rkdsc_core.data.specs import Split

__all__ = ["CACHE_FORMAT", "cache_path", "read_split", "write_split"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the cached layout changes; other versions are rebuilt."""

_ARRAYS: dict[str, np.dtype[Any]] = {"images": np.dtype(np.uint8), "labels": np.dtype(np.int64)}


def cache_path(cache_dir: Path, dataset: str, source_sha256: str) -> Path:
    """The folder holding ``dataset``'s arrays decoded from the source with this checksum."""
    return Path(cache_dir) / dataset / source_sha256[:16]


def _manifest_path(folder: Path, split: Split) -> Path:
    return folder / f"{split}-manifest.json"


def _array_sha256(arr: npt.NDArray[Any]) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data).hexdigest()


def read_split(
    folder: Path, split: Split, *, source_sha256: str, classes: tuple[str, ...]
) -> SplitArrays | None:
    """Load a cached split, or ``None`` if it is absent, incomplete or corrupt.

    A split is used only if its manifest (written last) exists, matches ``source_sha256``,
    ``classes`` and :data:`CACHE_FORMAT`, and each array has the manifest's shape, dtype and
    sha256. Arrays come back as read-only memory maps.
    """
    manifest_file = _manifest_path(folder, split)
    if not manifest_file.is_file():
        return None
    try:
        manifest = json.loads(manifest_file.read_text())
        if (
            manifest.get("format") != CACHE_FORMAT
            or manifest.get("source_sha256") != source_sha256
            or tuple(manifest.get("classes", ())) != classes
        ):
            raise ValueError("manifest is for another source, class list or cache format")
        loaded: dict[str, npt.NDArray[Any]] = {}
        for key, dtype in _ARRAYS.items():
            entry = manifest["arrays"][key]
            arr = np.load(folder / entry["file"], mmap_mode="r", allow_pickle=False)
            if arr.dtype != dtype or list(arr.shape) != entry["shape"]:
                raise ValueError(f"{entry['file']} has shape {arr.shape} dtype {arr.dtype}")
            if _array_sha256(arr) != entry["sha256"]:
                raise ValueError(f"{entry['file']} does not match its sha256")
            loaded[key] = arr
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring the broken %s cache in %s (%s); rebuilding", split, folder, err)
        return None
    if len(loaded["images"]) != len(loaded["labels"]):
        logger.warning("ignoring the %s cache in %s: images/labels differ in length", split, folder)
        return None
    return SplitArrays(loaded["images"], loaded["labels"])


def write_split(
    folder: Path,
    split: Split,
    arrays: SplitArrays,
    *,
    source_sha256: str,
    classes: tuple[str, ...],
    extra: dict[str, Any] | None = None,
) -> None:
    """Cache one split atomically.

    The arrays are written to a temporary folder next to ``folder``, moved into place with
    ``os.replace``, and the manifest (counts, shapes, dtypes, sha256 of each array) is moved
    in last, so a reader never sees a manifest without its complete arrays.

    Args:
        arrays: images ``[N, H, W, C]`` uint8, labels ``[N]`` int64.
        extra: more JSON-able facts for the manifest (source path, format).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=folder.parent))
    try:
        entries: dict[str, dict[str, Any]] = {}
        for key, dtype in _ARRAYS.items():
            arr = np.ascontiguousarray(getattr(arrays, key), dtype=dtype)
            name = f"{split}-{key}.npy"
            np.save(tmp / name, arr, allow_pickle=False)
            entries[key] = {
                "file": name,
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "nbytes": int(arr.nbytes),
                "sha256": _array_sha256(arr),
            }
        manifest = {
            "format": CACHE_FORMAT,
            "split": split,
            "count": len(arrays.labels),
            "source_sha256": source_sha256,
            "classes": list(classes),
            "class_counts": np.bincount(arrays.labels, minlength=len(classes)).tolist(),
            "arrays": entries,
            **(extra or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _manifest_path(folder, split).unlink(missing_ok=True)
        for entry in entries.values():
            os.replace(tmp / entry["file"], folder / entry["file"])
        os.replace(tmp / "manifest.json", _manifest_path(folder, split))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("cached %d %s images in %s", len(arrays.labels), split, folder)
