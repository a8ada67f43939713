"""Generate the Python gRPC stubs of proto/rkdsc/v1 into services/pb (committed).

Usage: python scripts/gen_proto.py [--check]
  --check  regenerate into a temporary folder and fail if it differs from services/pb.
The generated modules import each other as ``services.pb.<name>_pb2``.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "rkdsc" / "v1"
OUT = ROOT / "services" / "pb"
_IMPORT = re.compile(r"^from rkdsc\.v1 import (\w+) as", re.MULTILINE)


def generate(dest: Path) -> list[Path]:
    """Run protoc on every .proto of rkdsc.v1; write flat modules into ``dest``."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted((Path(tmp) / "rkdsc" / "v1").iterdir()):
            text = _IMPORT.sub(r"from services.pb import \1 as", f.read_text())
            (dest / f.name).write_text(text)
            written.append(dest / f.name)
    doc = '"""Generated gRPC stubs of proto/rkdsc/v1 (scripts/gen_proto.py)."""\n'
    (dest / "__init__.py").write_text(doc)
    return written


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            cmp = filecmp.dircmp(tmp, OUT, ignore=["__pycache__"])
            stale = cmp.diff_files + cmp.left_only + cmp.right_only
            if stale:
                print(f"services/pb is stale ({', '.join(stale)}): run scripts/gen_proto.py")  # noqa: T201
                return 1
        print("services/pb matches proto/rkdsc/v1")  # noqa: T201
        return 0
    if OUT.exists():
        shutil.rmtree(OUT)
    for path in generate(OUT):
        print(path.relative_to(ROOT))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
