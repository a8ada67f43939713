"""Decoder for the official CIFAR-10/100 binary releases (fixed-size records, never pickle)."""

from __future__ import annotations

import logging
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from rkdsc_core.data._types import SplitArrays
from rkdsc_core.data.errors import source_error
from rkdsc_core.data.specs import SPLITS, DatasetSpec, Split

__all__ = ["binary_files", "decode_cifar_binary", "decode_records", "is_binary_member"]

logger = logging.getLogger(__name__)

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Layout:
    folder: str
    label_bytes: int
    label_at: int
    train: tuple[str, ...]
    test: tuple[str, ...]

    def files(self, split: Split) -> tuple[str, ...]:
        return self.train if split == "train" else self.test


_LAYOUTS = {
    # <1 x label><3072 x pixel>: 1024 red, 1024 green, 1024 blue, each row-major 32x32.
    "cifar10": _Layout(
        "cifar-10-batches-bin",
        label_bytes=1,
        label_at=0,
        train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test=("test_batch.bin",),
    ),
    # <1 x coarse label><1 x fine label><3072 x pixel>
    "cifar100": _Layout(
        "cifar-100-binary", label_bytes=2, label_at=1, train=("train.bin",), test=("test.bin",)
    ),
}


def binary_files(spec: DatasetSpec, root: Path) -> list[str] | None:
    """The record file names of an extracted binary release in ``root``, or ``None``.

    ``root`` counts as a release if it holds every file of at least one split
    (``data_batch_1..5.bin`` / ``test_batch.bin`` for CIFAR-10; ``train.bin`` / ``test.bin``
    for CIFAR-100).
    """
    layout = _LAYOUTS.get(spec.name)
    if layout is None:
        return None
    found = [
        list(layout.files(s)) for s in SPLITS if all((root / n).is_file() for n in layout.files(s))
    ]
    if not found:
        return None
    return [p for group in found for p in group]


def is_binary_member(name: str) -> bool:
    """Whether archive member ``name`` belongs to an official CIFAR binary release."""
    parts = PurePosixPath(name).parts
    folders = {layout.folder for layout in _LAYOUTS.values()}
    return bool(parts) and (parts[-1].endswith(".bin") or any(p in folders for p in parts))


def decode_records(spec: DatasetSpec, raw: bytes, where: str) -> SplitArrays:
    """Decode concatenated binary records.

    Args:
        spec: ``cifar10`` (record = 1 label byte + 3072 pixel bytes) or ``cifar100``
            (coarse byte + fine byte + 3072 pixel bytes; the fine label is kept).
        raw: the bytes of one or more record files.
        where: the file name, for error messages.

    Returns:
        images ``[N, 32, 32, 3]`` uint8 (the CHW planes transposed to HWC), labels ``[N]``
        int64.
    """
    layout = _LAYOUTS[spec.name]
    record = layout.label_bytes + _PIXELS
    if not raw or len(raw) % record:
        raise source_error(
            spec,
            f"{where} has {len(raw)} bytes, not a whole number of {record}-byte "
            f"{spec.title} records ({layout.label_bytes} label byte(s) + {_PIXELS} pixel bytes)",
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = records[:, layout.label_at].astype(np.int64)
    if int(labels.max()) >= spec.num_classes:
        raise source_error(
            spec,
            f"{where} holds label {int(labels.max())}, but {spec.title} has "
            f"{spec.num_classes} classes (is this the other CIFAR release?)",
        )
    images = records[:, layout.label_bytes :].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return SplitArrays(np.ascontiguousarray(images), labels)


def _read_tar(spec: DatasetSpec, archive: Path, wanted: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in wanted and base not in found:
                    f = tar.extractfile(member)
                    assert f is not None  # regular files always have a stream
                    found[base] = f.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise source_error(
            spec, f"cannot read {archive}: truncated or corrupt archive ({err})"
        ) from err
    return found


def decode_cifar_binary(
    spec: DatasetSpec, path: Path, splits: Sequence[Split]
) -> dict[Split, SplitArrays]:
    """Decode ``splits`` from an extracted release folder or the (streamed) ``.tar.gz``.

    Returns:
        ``{split: (images [N, 32, 32, 3] uint8, labels [N] int64)}`` in file/record order.
    """
    layout = _LAYOUTS.get(spec.name)
    if layout is None:
        raise source_error(spec, f"{spec.title} has no official binary release ({path})")
    wanted = {n for s in splits for n in layout.files(s)}
    if path.is_dir():
        data: dict[str, bytes] = {}
        for name in sorted(wanted):
            try:
                data[name] = (path / name).read_bytes()
            except OSError:
                continue
    else:
        data = _read_tar(spec, path, wanted)
    out: dict[Split, SplitArrays] = {}
    for split in splits:
        names = layout.files(split)
        missing = [n for n in names if n not in data]
        if missing:
            raise source_error(
                spec, f"{path} lacks {', '.join(missing)} of the {spec.title} binary release"
            )
        parts = [decode_records(spec, data[n], f"{path}:{n}") for n in names]
        images = np.concatenate([p.images for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        if len(labels) != spec.split_size(split):
            logger.warning(
                "%s %s split from %s has %d images, the official release has %d",
                spec.name,
                split,
                path,
                len(labels),
                spec.split_size(split),
            )
        out[split] = SplitArrays(images, labels)
    return out
