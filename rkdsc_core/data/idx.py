"""Decoder for (Fashion-)MNIST IDX files, plain or gzipped, with magic-number and size checks."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkdsc_core.data._types import SplitArrays
from rkdsc_core.data.errors import source_error
from rkdsc_core.data.specs import SPLITS, DatasetSpec, Split

__all__ = ["IDX_NAMES", "decode_idx", "idx_files", "parse_idx"]

IDX_NAMES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""``split -> (images file, labels file)``, each optionally with a ``.gz`` suffix."""

_UBYTE = 0x08


def _find(root: Path, base: str) -> Path | None:
    for name in (base, f"{base}.gz"):
        if (root / name).is_file():
            return root / name
    return None


def idx_files(root: Path) -> list[str] | None:
    """The IDX file names in ``root`` (plain preferred over ``.gz``), or ``None`` if none.

    ``root`` counts as an IDX folder if it holds both files of at least one split.
    """
    found: list[str] = []
    for split in SPLITS:
        pair = [_find(root, base) for base in IDX_NAMES[split]]
        found.extend(p.name for p in pair if p is not None and all(q is not None for q in pair))
    return found or None


def parse_idx(spec: DatasetSpec, data: bytes, ndim: int, where: str) -> npt.NDArray[np.uint8]:
    """Parse one IDX file of unsigned bytes.

    Args:
        data: the (decompressed) file; header = 0x00 0x00 0x08 ``ndim``, then ``ndim``
            big-endian uint32 sizes, then the values.
        ndim: 3 for images (magic 0x00000803), 1 for labels (magic 0x00000801).

    Returns:
        uint8 array of the header's shape (``[N, rows, cols]`` or ``[N]``).
    """
    magic = 0x0800 | ndim
    got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got != magic:
        shown = "a file shorter than 4 bytes" if got is None else f"magic 0x{got:08x}"
        raise source_error(
            spec, f"{where} is not an IDX{ndim} ubyte file ({shown}, expected 0x{magic:08x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise source_error(spec, f"{where}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise source_error(
            spec,
            f"{where}: IDX header says shape {shape} ({expected} bytes), but the file holds "
            f"{len(data) - header} bytes (truncated or corrupt)",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read(spec: DatasetSpec, path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as err:
        raise source_error(spec, f"cannot read {path}: truncated or corrupt ({err})") from err


def decode_idx(spec: DatasetSpec, root: Path, splits: Sequence[Split]) -> dict[Split, SplitArrays]:
    """Decode ``splits`` from the IDX files in folder ``root``.

    Returns:
        ``{split: (images [N, 28, 28, 1] uint8, labels [N] int64)}`` in file order.
    """
    h, w, c = spec.image_shape
    out: dict[Split, SplitArrays] = {}
    for split in splits:
        image_base, label_base = IDX_NAMES[split]
        image_path, label_path = _find(root, image_base), _find(root, label_base)
        if image_path is None or label_path is None:
            raise source_error(
                spec, f"{root} lacks {image_base}[.gz] or {label_base}[.gz] ({split} split)"
            )
        images = parse_idx(spec, _read(spec, image_path), 3, str(image_path))
        labels = parse_idx(spec, _read(spec, label_path), 1, str(label_path))
        if images.shape[1:] != (h, w):
            raise source_error(
                spec,
                f"{image_path} holds {images.shape[2]}x{images.shape[1]} images, but "
                f"{spec.title} images are {w}x{h}",
            )
        if not len(labels):
            raise source_error(spec, f"{label_path} holds no labels")
        if len(images) != len(labels):
            raise source_error(
                spec, f"{image_path} has {len(images)} images but {label_path} {len(labels)} labels"
            )
        if int(labels.max()) >= spec.num_classes:
            raise source_error(
                spec, f"{label_path} holds label {int(labels.max())} >= {spec.num_classes}"
            )
        out[split] = SplitArrays(
            np.ascontiguousarray(images.reshape(-1, h, w, c)), labels.astype(np.int64)
        )
    return out
