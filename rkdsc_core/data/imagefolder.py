"""Decoder for image-folder trees (``<split>/<class>/<file>``), as a folder or a streamed tar."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rkdsc_core.data._types import SplitArrays, UInt8Array
from rkdsc_core.data.errors import source_error
from rkdsc_core.data.specs import SPLITS, DatasetSpec, Split

__all__ = ["decode_imagefolder", "is_imagefolder_member", "tree_files"]

logger = logging.getLogger(__name__)

_MAX_IMAGE_BYTES = 16 << 20
"""Larger archive members are refused rather than read into memory."""


def tree_files(root: Path) -> list[str] | None:
    """The image files of an image-folder tree, or ``None`` if ``root`` is not one.

    ``root`` is a tree if it has a ``train/`` or ``test/`` folder; its files are the
    regular, non-hidden files at ``root/<split>/<class>/<file>``, returned as sorted
    relative ``/``-separated paths.
    """
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        return None
    files: list[str] = []
    for split in splits:
        with os.scandir(root / split) as class_dirs:
            classes = [d.name for d in class_dirs if d.is_dir() and not d.name.startswith(".")]
        for name in sorted(classes):
            with os.scandir(root / split / name) as entries:
                files.extend(
                    f"{split}/{name}/{e.name}"
                    for e in entries
                    if e.is_file() and not e.name.startswith(".")
                )
    files.sort()
    return files


def _parts(name: str) -> list[str]:
    """The folders and file of member ``name``, without empty or ``.`` parts."""
    return [p for p in name.split("/") if p and p != "."]


def _split_and_class(name: str) -> tuple[str, str] | None:
    parts = _parts(name)
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    if parts[-1].startswith(".") or parts[-2].startswith("."):  # as the folder tree skips them
        return None
    return parts[-3], parts[-2]


def is_imagefolder_member(name: str) -> bool:
    """Whether archive member ``name`` looks like ``[prefix/]<split>/<class>/<file>``."""
    return _split_and_class(name) is not None


def _decode_image(spec: DatasetSpec, data: bytes, where: str) -> UInt8Array:
    h, w, c = spec.image_shape
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB" if c == 3 else "L"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise source_error(spec, f"cannot decode image {where} ({err})") from err
    if c == 1:
        arr = arr[:, :, None]
    if arr.shape != (h, w, c):
        raise source_error(
            spec,
            f"image {where} is {arr.shape[1]}x{arr.shape[0]}, but {spec.title} images are {w}x{h}",
        )
    return arr


class _Collector:
    """Accumulates decoded images per split, checking class folder names."""

    def __init__(self, spec: DatasetSpec, splits: Sequence[Split], where: Path) -> None:
        self.spec = spec
        self.splits = tuple(splits)
        self.where = where
        self.index = {c: i for i, c in enumerate(spec.classes)}
        self.items: dict[str, list[tuple[int, str, UInt8Array]]] = {s: [] for s in self.splits}
        self.prefix: str | None = None
        """The folder holding ``<split>/`` (``""`` at the top), the same for every image."""
        self.names: set[str] = set()

    def wants(self, split: str) -> bool:
        return split in self.items

    def label(self, class_name: str, member: str) -> int:
        label = self.index.get(class_name)
        if label is None:
            raise source_error(
                self.spec,
                f"class folder {class_name!r} in {self.where} ({member}) is not a "
                f"{self.spec.title} class; class folders must be named "
                f"{', '.join(self.spec.classes)}",
            )
        return label

    def add(self, split: str, label: int, name: str, image: UInt8Array) -> None:
        """Keep image ``name`` (``[prefix/]<split>/<class>/<file>``).

        Raises:
            DataSourceError: an image under another prefix than the first one's (two
                dataset trees in one source would be merged), or the same name twice.
        """
        parts = _parts(name)
        prefix, key = "/".join(parts[:-3]), "/".join(parts)
        if self.prefix is None:
            self.prefix = prefix
        elif prefix != self.prefix:
            raise source_error(
                self.spec,
                f"{self.where} holds more than one dataset tree: {self.prefix or '.'}/"
                f"{split}/... and {prefix or '.'}/{split}/... ({name}); keep one",
            )
        if key in self.names:
            raise source_error(self.spec, f"{self.where} holds {name} twice")
        self.names.add(key)
        self.items[split].append((label, name, image))

    def finish(self) -> dict[Split, SplitArrays]:
        out: dict[Split, SplitArrays] = {}
        for split in self.splits:
            items = sorted(self.items[split], key=lambda t: (t[0], t[1]))
            if not items:
                raise source_error(self.spec, f"no {split}/<class>/* images in {self.where}")
            images = np.stack([t[2] for t in items])
            labels = np.fromiter((t[0] for t in items), dtype=np.int64, count=len(items))
            missing = sorted(set(self.spec.classes) - {self.spec.classes[t[0]] for t in items})
            if missing:
                logger.warning(
                    "%s %s split in %s has no images of %d classes (%s)",
                    self.spec.name,
                    split,
                    self.where,
                    len(missing),
                    ", ".join(missing[:5]),
                )
            out[split] = SplitArrays(images, labels)
        return out


def _decode_tree(
    spec: DatasetSpec, root: Path, files: Iterable[str], collector: _Collector
) -> None:
    for rel in files:
        parsed = _split_and_class(rel)
        if parsed is None or not collector.wants(parsed[0]):
            continue
        label = collector.label(parsed[1], rel)
        path = os.path.join(root, rel)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise source_error(spec, f"cannot read {path} ({err})") from err
        collector.add(parsed[0], label, rel, _decode_image(spec, data, path))


def _decode_tar(spec: DatasetSpec, archive: Path, collector: _Collector) -> None:
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parsed = _split_and_class(member.name)
                if parsed is None or not collector.wants(parsed[0]):
                    continue
                label = collector.label(parsed[1], member.name)
                if member.size > _MAX_IMAGE_BYTES:
                    raise source_error(
                        spec, f"archive member {member.name} of {archive} is too large for an image"
                    )
                f = tar.extractfile(member)
                assert f is not None  # regular files always have a stream
                data = f.read()
                image = _decode_image(spec, data, f"{archive}:{member.name}")
                collector.add(parsed[0], label, member.name, image)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise source_error(
            spec, f"cannot read {archive}: truncated or corrupt archive ({err})"
        ) from err


def decode_imagefolder(
    spec: DatasetSpec,
    path: Path,
    files: Sequence[str],
    splits: Sequence[Split],
) -> dict[Split, SplitArrays]:
    """Decode the ``splits`` of an image-folder tree or of its (streamed, unextracted) tar.

    Args:
        spec: the dataset; class folders must be named after ``spec.classes``.
        path: the tree's root folder, or a ``.tar[.gz|.bz2|.xz]`` holding it.
        files: the tree's image files, relative to ``path`` (empty for an archive).
        splits: the splits to decode.

    Returns:
        ``{split: (images [N, H, W, C] uint8, labels [N] int64)}``, sorted by label then
        file name, with ``label = spec.classes.index(<class folder>)``.
    """
    collector = _Collector(spec, splits, path)
    if path.is_dir():
        _decode_tree(spec, path, files, collector)
    else:
        _decode_tar(spec, path, collector)
    return collector.finish()
