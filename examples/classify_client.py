#!/usr/bin/env python3
"""Classify image files with an RKD-SC transmitter, written only from the .proto files.

The client imports nothing from rkdsc: it compiles ``proto/rkdsc/v1/*.proto`` with
``grpc_tools.protoc`` into a temporary folder at start-up, streams the images to
``rkdsc.v1.Transmitter/Classify`` and prints one line per result (in completion order).

Needs ``grpcio``, ``grpcio-tools`` and ``protobuf``::

    python examples/classify_client.py --target 127.0.0.1:50051 cat.png ship.jpg

Over TLS (``--tls`` with the system's roots, or ``--ca-file``; mutual TLS adds
``--cert-file`` and ``--key-file``)::

    python examples/classify_client.py --target tx.example.org:50051 --ca-file ca.crt \
        --cert-file client.crt --key-file client.key cat.png
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The servers accept messages up to 8 MiB (an encoded image is far below)."""

DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"


def proto_root(path: Path) -> Path:
    """The include root holding ``rkdsc/v1/*.proto`` (accepts the root or ``rkdsc/v1``)."""
    path = path.resolve()
    if (path / "rkdsc" / "v1" / "services.proto").is_file():
        return path
    if (path / "services.proto").is_file() and path.parent.name == "rkdsc":
        return path.parent.parent
    raise SystemExit(f"error: no rkdsc/v1/services.proto under {path} (pass --proto-dir)")


def generate_stubs(root: Path, out: Path) -> tuple[ModuleType, ModuleType, ModuleType]:
    """Compile the protos into ``out``; return (frame_pb2, services_pb2, services_pb2_grpc)."""
    from grpc_tools import protoc

    protos = sorted((root / "rkdsc" / "v1").glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(root)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"error: protoc failed on {', '.join(p.name for p in protos)}")
    sys.path.insert(0, str(out))
    return (
        importlib.import_module("rkdsc.v1.frame_pb2"),
        importlib.import_module("rkdsc.v1.services_pb2"),
        importlib.import_module("rkdsc.v1.services_pb2_grpc"),
    )


def image_ids(paths: list[Path]) -> list[str]:
    """File names as image ids, made unique within the stream (``name#i`` for a repeat, with
    ``i`` the position, or a larger number if that is taken too)."""
    ids: list[str] = []
    taken: set[str] = set()
    for i, path in enumerate(paths):
        image_id, n = path.name, i
        while image_id in taken:
            image_id, n = f"{path.name}#{n}", n + len(paths)
        ids.append(image_id)
        taken.add(image_id)
    return ids


def requests(pb: ModuleType, paths: list[Path], ids: list[str]) -> Iterator[Any]:
    for path, image_id in zip(paths, ids, strict=True):
        yield pb.ClassifyRequest(image_id=image_id, image=pb.Image(encoded=path.read_bytes()))


def describe(frame_pb: ModuleType, result: Any) -> dict[str, Any]:
    """One FrameResult as a flat dict."""
    fate = frame_pb.FrameFate.Name(result.fate).removeprefix("FRAME_FATE_")
    row: dict[str, Any] = {
        "image_id": result.image_id,
        "class": None,
        "probability": None,
        "estimated_snr_db": None,
        "symbols": result.num_symbols,
        "fate": fate,
    }
    if result.HasField("prediction") and fate == "PREDICTED":
        p = result.prediction
        row["class"] = p.class_name or str(p.class_index)
        if 0 <= p.class_index < len(p.probabilities):
            row["probability"] = round(float(p.probabilities[p.class_index]), 4)
        row["estimated_snr_db"] = round(float(p.estimated_snr_db), 2)
    if result.error:
        row["error"] = result.error
    return row


def tls_credentials(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``--tls``/``--ca-file``/``--cert-file``/``--key-file`` (None:
    plaintext); a bad combination or an unreadable file is a usage error (exit 2)."""
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file go together (mutual TLS)")
    if not (args.tls or args.ca_file or args.cert_file):
        if args.server_name:
            parser.error("--server-name needs TLS (--tls or --ca-file)")
        return None

    def read(path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as err:
            parser.error(f"cannot read {path}: {err.strerror}")
            raise  # parser.error exits

    return grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),  # None: the system's roots
        private_key=read(args.key_file),
        certificate_chain=read(args.cert_file),
    )


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    server_name: str | None,
    options: list[tuple[str, Any]],
) -> grpc.Channel:
    """A plaintext channel without ``credentials``, else a TLS one (checking the server's
    certificate for ``server_name`` when given, else for the target's host)."""
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    if server_name:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
    return grpc.secure_channel(target, credentials, options=options)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--target", default="127.0.0.1:50051", help="transmitter host:port")
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=DEFAULT_PROTO_DIR,
        help="folder holding rkdsc/v1/*.proto (default: the repository's proto/)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of the call [s]")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    tls = parser.add_argument_group("TLS (default: plaintext)")
    tls.add_argument("--tls", action="store_true", help="TLS, trusting the system's roots")
    tls.add_argument(
        "--ca-file", type=Path, help="PEM CA certificate the transmitter's is checked against"
    )
    tls.add_argument(
        "--cert-file", type=Path, help="PEM client certificate (mutual TLS), with --key-file"
    )
    tls.add_argument("--key-file", type=Path, help="PEM key of --cert-file")
    tls.add_argument(
        "--server-name", help="name to check the transmitter's certificate for (default: host)"
    )
    args = parser.parse_args(argv)

    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    credentials = tls_credentials(parser, args)
    root = proto_root(args.proto_dir)
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="rkdsc-stubs-") as tmp:
        frame_pb, services_pb, services_grpc = generate_stubs(root, Path(tmp))
        ids = image_ids(args.images)
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        received = 0
        with open_channel(args.target, credentials, args.server_name, options) as channel:
            stub = services_grpc.TransmitterStub(channel)
            if not args.json:
                out.write(
                    f"{'image_id':<24} {'class':<12} {'prob':>6} {'est_snr_db':>10} "
                    f"{'symbols':>7}  fate\n"
                )
            try:
                for result in stub.Classify(
                    requests(services_pb, args.images, ids), timeout=args.timeout
                ):
                    received += 1
                    row = describe(frame_pb, result)
                    if args.json:
                        out.write(json.dumps(row) + "\n")
                        continue
                    out.write(
                        f"{row['image_id']:<24} {row['class'] or '-':<12} "
                        f"{_cell(row['probability'], '6.3f'):>6} "
                        f"{_cell(row['estimated_snr_db'], '10.1f'):>10} "
                        f"{row['symbols']:>7}  {row['fate']}"
                        + (f"  {row['error']}" if "error" in row else "")
                        + "\n"
                    )
            except grpc.RpcError as err:
                sys.stderr.write(f"error: Classify failed: {err.code().name}: {err.details()}\n")
                return 1
    if received != len(ids):
        sys.stderr.write(f"warning: {received} results for {len(ids)} images\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
