"""sha256 of a source: of the archive file, or over a folder's sorted relative paths and bytes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["sha256_file", "sha256_tree"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of the bytes of ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _tree_digest(root: Path, rel: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in rel:
        with open(os.path.join(root, name), "rb") as f:
            data = f.read()
        encoded = name.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _fingerprint(root: Path, rel: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in rel:
        st = os.stat(os.path.join(root, name))
        # ctime too: a rewrite in place that restores the mtime (cp -p) still changes it
        stamp = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
        h.update(f"{name}\0{stamp}\n".encode())
    return h.hexdigest()


def sha256_tree(root: Path, files: Sequence[str], *, memo_dir: Path | None = None) -> str:
    """Hex sha256 over ``files`` of the folder ``root``: sorted relative paths and contents.

    Args:
        root: the folder.
        files: the files that make up the source, as ``/``-separated paths relative to
            ``root`` (other files in ``root`` are ignored).
        memo_dir: if given, the digest is remembered there against a cheap fingerprint
            (relative path, size, mtime, ctime, inode of each file), so an unchanged tree is not
            re-read on every load.
    """
    rel = sorted(files)
    if memo_dir is None:
        return _tree_digest(root, rel)
    fingerprint = _fingerprint(root, rel)
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    memo = memo_dir / f"{key}.json"
    try:
        record = json.loads(memo.read_text())
        if record.get("fingerprint") == fingerprint and isinstance(record.get("sha256"), str):
            return str(record["sha256"])
    except (OSError, ValueError, AttributeError):  # no memo yet, or an unreadable one
        pass
    digest = _tree_digest(root, rel)
    try:
        memo_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".memo-", dir=memo_dir)
    except OSError as err:  # a read-only cache only costs a re-hash next time
        logger.debug("could not remember the tree hash of %s: %s", root, err)
        return digest
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(
                {"root": str(root.resolve()), "fingerprint": fingerprint, "sha256": digest}, f
            )
        os.replace(tmp, memo)
    except OSError as err:
        logger.debug("could not remember the tree hash of %s: %s", root, err)
        Path(tmp).unlink(missing_ok=True)
    return digest
