"""Finding a dataset's source from a path: image-folder tree/tar, CIFAR binary, or IDX files."""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from rkdsc_core.data.checksum import sha256_file, sha256_tree
from rkdsc_core.data.cifar_binary import binary_files, is_binary_member
from rkdsc_core.data.errors import source_error
from rkdsc_core.data.idx import IDX_NAMES, idx_files
from rkdsc_core.data.imagefolder import is_imagefolder_member, tree_files
from rkdsc_core.data.specs import DatasetSpec, SourceFormat

__all__ = ["Source", "resolve_source", "source_sha256"]

_PEEK_MEMBERS = 64
"""How many archive members are looked at to tell an image tree from a binary release."""


@dataclass(frozen=True)
class Source:
    """A located dataset source.

    Attributes:
        format: how it is decoded (``imagefolder``, ``cifar-binary``, ``idx``).
        path: the folder, or the archive file (read by streaming, never extracted).
        files: for a folder, the files that make up the source, as ``/``-separated paths
            relative to :attr:`path` (hashed for the cache key); empty for an archive,
            whose own bytes are hashed.
    """

    format: SourceFormat
    path: Path
    files: tuple[str, ...] = ()

    @property
    def is_archive(self) -> bool:
        """Whether :attr:`path` is an archive file rather than a folder."""
        return not self.files


def _classify_archive(spec: DatasetSpec, path: Path) -> Source | None:
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for i, member in enumerate(tar):
                if i >= _PEEK_MEMBERS:
                    break
                if not member.isfile():
                    continue
                if "cifar-binary" in spec.formats and is_binary_member(member.name):
                    return Source("cifar-binary", path)
                if "imagefolder" in spec.formats and is_imagefolder_member(member.name):
                    return Source("imagefolder", path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise source_error(
            spec, f"cannot read {spec.title} source {path}: not a tar archive, or corrupt ({err})"
        ) from err
    return None


def _detect(spec: DatasetSpec, path: Path, depth: int) -> Source | None:
    if path.is_file():
        record_names = {n for pair in IDX_NAMES.values() for n in pair}
        if path.name.endswith(".bin") or path.name.removesuffix(".gz") in record_names:
            return _detect(spec, path.parent, 0)  # one file of a release: use its folder
        return _classify_archive(spec, path)
    if not path.is_dir():
        return None
    if "idx" in spec.formats and (files := idx_files(path)):
        return Source("idx", path, tuple(files))
    if "cifar-binary" in spec.formats and (files := binary_files(spec, path)):
        return Source("cifar-binary", path, tuple(files))
    if "imagefolder" in spec.formats and (files := tree_files(path)):
        return Source("imagefolder", path, tuple(files))
    if depth > 0:
        for name in spec.source_names:
            child = path / name
            if child.exists() and (found := _detect(spec, child, depth - 1)):
                return found
    return None


def resolve_source(spec: DatasetSpec, path: Path | None) -> Source:
    """Locate ``spec``'s source at ``path``.

    ``path`` may be the source itself (an image-folder tree or its tar, an official CIFAR
    binary archive or its extracted folder, a folder of IDX files) or a folder holding one
    under a usual name (``spec.source_names``, searched two levels deep). ``None`` means
    ``spec.default_source`` (Debian's Fashion-MNIST folder), if the dataset has one.

    Raises:
        DataSourceError: nothing usable there, with what was expected and where to get it.
    """
    if path is None:
        if spec.default_source is None:
            raise source_error(spec, f"no {spec.title} source given")
        path = spec.default_source
    path = Path(path).expanduser()
    if not path.exists():
        raise source_error(spec, f"no {spec.title} source at {path} (no such file or folder)")
    found = _detect(spec, path, depth=2)
    if found is None:
        raise source_error(spec, f"no {spec.title} source at {path}")
    return found


def source_sha256(source: Source, *, memo_dir: Path | None = None) -> str:
    """Hex sha256 of ``source``: of the archive's bytes, or over the folder's files.

    Args:
        memo_dir: where folder digests are remembered (see :func:`sha256_tree`).
    """
    if source.is_archive:
        return sha256_file(source.path)
    return sha256_tree(source.path, source.files, memo_dir=memo_dir)
