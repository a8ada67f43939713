"""``load_dataset`` / ``prepare_dataset``: locate a source, decode it once, serve it from cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from rkdsc_core.data import cifar_binary, idx, imagefolder
from rkdsc_core.data._types import SplitArrays
from rkdsc_core.data.cache import cache_path, read_split, write_split
from rkdsc_core.data.dataset import ImageDataset
from rkdsc_core.data.errors import source_error
from rkdsc_core.data.sources import Source, resolve_source, source_sha256
from rkdsc_core.data.specs import SPLITS, DatasetSpec, Split, get_spec

__all__ = ["load_dataset", "prepare_dataset"]

logger = logging.getLogger(__name__)

_TREE_HASH_MEMO = "_tree-hashes"
"""Sub-folder of the cache where folder-source digests are remembered."""


def _decode(spec: DatasetSpec, source: Source, splits: Sequence[Split]) -> dict[Split, SplitArrays]:
    if source.format == "imagefolder":
        return imagefolder.decode_imagefolder(spec, source.path, source.files, splits)
    if source.format == "cifar-binary":
        return cifar_binary.decode_cifar_binary(spec, source.path, splits)
    return idx.decode_idx(spec, source.path, splits)


def prepare_dataset(
    name: str,
    *,
    source: Path | None = None,
    cache_dir: Path,
    splits: Sequence[Split] = SPLITS,
) -> dict[Split, ImageDataset]:
    """Make sure ``splits`` of dataset ``name`` are cached, decoding (in one pass) the missing.

    Args:
        name: a dataset in :data:`~rkdsc_core.data.specs.DATASETS` (``cifar10``, ...).
        source: where the data is (see :func:`~rkdsc_core.data.sources.resolve_source`);
            ``None``: the dataset's default source, if any.
        cache_dir: root of the cache; arrays go to
            ``cache_dir/<name>/<source sha256[:16]>/<split>-{images,labels}.npy``.
        splits: which splits.

    Returns:
        ``{split: ImageDataset}`` (images ``[N, H, W, C]`` uint8, labels ``[N]`` int64).

    Raises:
        ValueError: unknown ``name`` or split.
        DataSourceError: the source is missing, corrupt or laid out unexpectedly.
    """
    spec = get_spec(name)
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    located = resolve_source(spec, None if source is None else Path(source))
    cache_dir = Path(cache_dir).expanduser()
    try:
        digest = source_sha256(located, memo_dir=cache_dir / _TREE_HASH_MEMO)
    except OSError as err:
        raise source_error(spec, f"cannot read {located.path} ({err})") from err
    folder = cache_path(cache_dir, spec.name, digest)
    arrays: dict[Split, SplitArrays] = {}
    for split in dict.fromkeys(splits):
        cached = read_split(folder, split, source_sha256=digest, classes=spec.classes)
        if cached is not None:
            logger.debug("%s %s: cache hit in %s", spec.name, split, folder)
            arrays[split] = cached
    missing = [s for s in dict.fromkeys(splits) if s not in arrays]
    if missing:
        start = time.perf_counter()
        logger.info(
            "decoding %s %s from %s (%s); this happens once per source",
            spec.name,
            "+".join(missing),
            located.path,
            located.format,
        )
        decoded = _decode(spec, located, missing)
        logger.info("decoded in %.1f s", time.perf_counter() - start)
        for split in missing:
            got = decoded[split]
            assert got.images.shape[1:] == spec.image_shape, got.images.shape
            write_split(
                folder,
                split,
                got,
                source_sha256=digest,
                classes=spec.classes,
                extra={
                    "dataset": spec.name,
                    "source_path": str(located.path),
                    "source_format": located.format,
                },
            )
            arrays[split] = got
    return {
        split: ImageDataset(
            name=spec.name,
            split=split,
            classes=spec.classes,
            images=arrays[split].images,
            labels=arrays[split].labels,
            source_sha256=digest,
        )
        for split in dict.fromkeys(splits)
    }


def load_dataset(
    name: str,
    split: Split = "train",
    *,
    source: Path | None = None,
    cache_dir: Path,
) -> ImageDataset:
    """Load one split of dataset ``name``, decoding it into the cache on first use.

    Args:
        name: ``cifar10``, ``cifar100`` or ``fashion-mnist``.
        split: ``"train"`` or ``"test"``.
        source: an image-folder tree or its .tar.gz, an official CIFAR binary archive or its
            extracted folder, a folder of IDX files, or a folder holding one of these;
            ``None``: the dataset's default (Debian's Fashion-MNIST folder), if it has one.
        cache_dir: root of the decoded-array cache (keyed by the source's sha256).

    Returns:
        The split: images ``[N, H, W, C]`` uint8 (read-only memory map when cached), labels
        ``[N]`` int64 indexing ``classes``.

    Raises:
        DataSourceError: the source is missing, corrupt or laid out unexpectedly.

    Example:
        >>> ds = load_dataset("cifar10", "test", source=Path("cifar10-jpeg.tar.gz"),
        ...                   cache_dir=Path("~/.cache/rkdsc"))  # doctest: +SKIP
        >>> ds.images.shape, ds.labels.dtype  # doctest: +SKIP
        ((10000, 32, 32, 3), dtype('int64'))
    """
    return prepare_dataset(name, source=source, cache_dir=cache_dir, splits=(split,))[split]
