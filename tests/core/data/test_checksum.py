"""The source digest of a folder and its memo."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rkdsc_core.data.checksum import sha256_tree


def test_a_rewrite_in_place_that_keeps_size_and_mtime_is_noticed(tmp_path: Path) -> None:
    root, memo = tmp_path / "src", tmp_path / "memo"
    root.mkdir()
    f = root / "batch.bin"
    f.write_bytes(b"\x07" * 64)
    before = sha256_tree(root, ["batch.bin"], memo_dir=memo)
    st = f.stat()
    time.sleep(0.01)  # a later ctime
    with f.open("r+b") as out:  # same size, same inode, as `cp -p` or `rsync --inplace -t`
        out.write(b"\xc8" * 64)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
    after = sha256_tree(root, ["batch.bin"], memo_dir=memo)
    assert after != before
    assert after == sha256_tree(root, ["batch.bin"])  # what reading the files gives
