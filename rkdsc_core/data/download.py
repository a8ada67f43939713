"""``download``: fetch a dataset's official release files, verify their MD5, move into place."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rkdsc_core.checkpoint import current_umask
from rkdsc_core.data.errors import DataSourceError
from rkdsc_core.data.specs import RemoteFile, get_spec

__all__ = ["download", "md5_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    """Hex MD5 of ``path`` (the checksum the datasets' authors publish)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch(remote: RemoteFile, dest: Path, timeout: float) -> None:
    """Stream ``remote`` into a temp file next to ``dest``, check MD5, rename atomically."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as r:
            while chunk := r.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != remote.md5.lower():
            raise ValueError(
                f"checksum mismatch for {remote.url}: md5 {h.hexdigest()}, expected {remote.md5}"
            )
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from others
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download(
    name: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download dataset ``name``'s official release into ``dest_dir`` (over HTTP(S)).

    Each file is streamed to a temporary file in ``dest_dir``, its MD5 checked against the
    published value, then renamed into place; on a mismatch or network error the temporary
    file is removed and nothing is left behind. Files already present with the right MD5
    are kept.

    Args:
        name: ``cifar10`` / ``cifar100`` (the binary ``.tar.gz``) or ``fashion-mnist`` (four
            IDX ``.gz`` files).
        dest_dir: created if missing.
        url, md5: override the address and checksum (single-file releases only; for mirrors
            and tests, e.g. a ``file://`` URL).
        timeout: socket timeout [s].

    Returns:
        A path to pass as ``source``: the archive (single-file releases) or ``dest_dir``.

    Raises:
        DataSourceError: download failed or the checksum did not match.
    """
    spec = get_spec(name)
    remotes = list(spec.downloads)
    if url is not None or md5 is not None:
        if len(remotes) != 1:
            raise ValueError(
                f"url/md5 overrides need a single-file release; {name} has {len(remotes)} files"
            )
        base = remotes[0]
        remotes = [RemoteFile(url or base.url, base.filename, md5 or base.md5)]
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    for remote in remotes:
        dest = dest_dir / remote.filename
        if dest.is_file() and md5_file(dest) == remote.md5.lower():
            logger.info("%s already present with the published md5", dest)
            continue
        logger.info("downloading %s to %s", remote.url, dest)
        try:
            _fetch(remote, dest, timeout)
        except ValueError as err:  # not source_error: its hint is to run this very download
            raise DataSourceError(
                f"download of {spec.title} failed: {err}; fetch {remote.url} by hand into "
                f"{dest_dir} (md5 {remote.md5})"
            ) from err
        except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
            raise DataSourceError(
                f"could not download {remote.url} ({type(err).__name__}: {err}); fetch it by "
                f"hand into {dest_dir} (md5 {remote.md5}), then pass --data {dest_dir}"
            ) from err
    if len(spec.downloads) == 1:
        return dest_dir / remotes[0].filename
    return dest_dir
