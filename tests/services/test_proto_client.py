"""examples/classify_client.py: the proto-only client, against a fake and the real stack."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from rkdsc_core.data.specs import CIFAR10_CLASSES
from services.pb import frame_pb2, services_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "classify_client.py"
PROTO_DIR = ROOT / "proto"


def write_pngs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` random 32x32 RGB PNGs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def run_client(target: str, images: list[Path], *extra: str, timeout: float = 60.0) -> Any:
    """Run the client in a fresh interpreter (outside the repository's packages)."""
    return subprocess.run(
        [sys.executable, str(CLIENT), "--target", target, "--proto-dir", str(PROTO_DIR)]
        + list(extra)
        + [str(p) for p in images],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=images[0].parent,
    )


class FakeTransmitter(services_pb2_grpc.TransmitterServicer):  # type: ignore[misc]
    """Answers every image with a fixed prediction, except ``lost_id``, which is LOST."""

    def __init__(self, lost_id: str) -> None:
        self.lost_id = lost_id
        self.received: list[Any] = []
        self.lock = threading.Lock()

    def Classify(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in request_iterator:
            with self.lock:
                self.received.append(request)
            if request.image_id == self.lost_id:
                yield frame_pb2.FrameResult(
                    image_id=request.image_id, fate=frame_pb2.FRAME_FATE_LOST, num_symbols=32
                )
                continue
            probs = [0.025] * 10
            probs[3] = 0.775
            yield frame_pb2.FrameResult(
                image_id=request.image_id,
                fate=frame_pb2.FRAME_FATE_PREDICTED,
                num_symbols=32,
                prediction=frame_pb2.Prediction(
                    class_index=3,
                    class_name="cat",
                    probabilities=probs,
                    estimated_snr_db=12.5,
                ),
            )


@pytest.fixture
def fake_transmitter() -> Iterator[tuple[str, FakeTransmitter]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = FakeTransmitter(lost_id="img1.png")
    services_pb2_grpc.add_TransmitterServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None).wait(timeout=5)


class TestClassifyClient:
    def test_client_prints_one_line_per_image(
        self, tmp_path: Path, fake_transmitter: tuple[str, FakeTransmitter]
    ) -> None:
        target, servicer = fake_transmitter
        images = write_pngs(tmp_path / "images", 3)
        proc = run_client(target, images)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert lines[0].split() == ["image_id", "class", "prob", "est_snr_db", "symbols", "fate"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert rows["img0.png"] == ["img0.png", "cat", "0.775", "12.5", "32", "PREDICTED"]
        assert rows["img1.png"] == ["img1.png", "-", "-", "-", "32", "LOST"]
        assert len(rows) == 3
        sent = {r.image_id: r.image.encoded for r in servicer.received}
        assert sent["img2.png"] == images[2].read_bytes()

    def test_client_json_output(
        self, tmp_path: Path, fake_transmitter: tuple[str, FakeTransmitter]
    ) -> None:
        target, _ = fake_transmitter
        images = write_pngs(tmp_path / "images", 2)
        proc = run_client(target, images, "--json")
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        by_id = {r["image_id"]: r for r in rows}
        assert by_id["img0.png"]["class"] == "cat"
        assert by_id["img0.png"]["probability"] == pytest.approx(0.775)
        assert by_id["img1.png"]["fate"] == "LOST"

    def test_client_reports_an_unreachable_transmitter(self, tmp_path: Path) -> None:
        images = write_pngs(tmp_path / "images", 1)
        proc = run_client("127.0.0.1:1", images, "--timeout", "5")
        assert proc.returncode == 1
        assert "UNAVAILABLE" in proc.stderr

    def test_client_speaks_mutual_tls(self, tmp_path: Path) -> None:
        """--ca-file, --cert-file, --key-file: a transmitter that requires a client
        certificate answers; without one, or trusting another CA, the call fails."""
        from services.certs import write_certs

        certs = write_certs(tmp_path / "certs")
        cert, key = certs.servers["transmitter"]
        credentials = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=certs.ca_file.read_bytes(),
            require_client_auth=True,
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        services_pb2_grpc.add_TransmitterServicer_to_server(FakeTransmitter("none"), server)
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        client_cert, client_key = certs.client
        mutual = ["--ca-file", str(certs.ca_file), "--cert-file", str(client_cert)]
        mutual += ["--key-file", str(client_key), "--timeout", "10"]
        images = write_pngs(tmp_path / "images", 2)
        try:
            proc = run_client(f"localhost:{port}", images, "--json", *mutual)
            assert proc.returncode == 0, proc.stderr
            assert len(proc.stdout.splitlines()) == 2
            # The name checked in the certificate: one it carries, and one it does not.
            named = [*mutual, "--server-name"]
            proc = run_client(f"127.0.0.1:{port}", images, *named, "localhost")
            assert proc.returncode == 0, proc.stderr
            proc = run_client(f"127.0.0.1:{port}", images, *named, "elsewhere.example.org")
            assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr
            # No client certificate: the server refuses the handshake.
            proc = run_client(f"localhost:{port}", images, *mutual[:2], "--timeout", "10")
            assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr
            # A server certificate signed by a CA the client does not trust.
            other = write_certs(tmp_path / "other")
            proc = run_client(
                f"localhost:{port}", images, "--ca-file", str(other.ca_file), *mutual[2:]
            )
            assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr
        finally:
            server.stop(grace=None).wait(timeout=5)
        # Usage errors (exit 2), before anything is compiled or dialled.
        proc = run_client(f"localhost:{port}", images, "--cert-file", str(client_cert))
        assert proc.returncode == 2 and "--key-file go together" in proc.stderr
        proc = run_client(f"localhost:{port}", images, "--server-name", "tx.example.org")
        assert proc.returncode == 2 and "--server-name needs TLS" in proc.stderr
        proc = run_client(f"localhost:{port}", images, "--ca-file", str(tmp_path / "absent"))
        assert proc.returncode == 2 and "cannot read" in proc.stderr

    def test_client_imports_nothing_from_rkdsc(self) -> None:
        source = CLIENT.read_text()
        assert "rkdsc_core" not in source
        assert "from services" not in source and "import services" not in source


_MISSING = [
    name
    for name in ("transmitter", "channel", "receiver")
    if importlib.util.find_spec(f"services.{name}") is None
]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(_MISSING), reason=f"services.{', services.'.join(_MISSING)} not available yet"
)
def test_client_against_the_real_stack(tmp_path: Path, tiny_weights: Path) -> None:
    from services.stack import Stack, StackPorts

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    images = write_pngs(tmp_path / "images", 3, seed=1)
    run_dir = tmp_path / "stack"
    env = {"OMP_NUM_THREADS": "1", "RKDSC_TRANSMITTER_TORCH_THREADS": "1"}
    with Stack.start(
        ports=StackPorts.free(),
        weights_dir=weights,
        run_dir=run_dir,
        token="proto-client-test",
        env=env,
        ready_timeout=45,
    ) as stack:
        proc = run_client(f"127.0.0.1:{stack.ports.transmitter}", images, "--json", timeout=45)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["image_id"] for r in rows) == ["img0.png", "img1.png", "img2.png"]
    for row in rows:
        assert row["fate"] == "PREDICTED", row
        assert row["class"] in CIFAR10_CLASSES
        assert 0.0 <= row["probability"] <= 1.0
        assert row["symbols"] > 0


def test_image_ids_are_unique_even_when_a_name_looks_like_a_repeat() -> None:
    spec = importlib.util.spec_from_file_location("classify_client", CLIENT)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    ids = client.image_ids([Path("a.png#2"), Path("a.png"), Path("x/a.png"), Path("y/a.png")])
    assert len(set(ids)) == 4 and ids[:2] == ["a.png#2", "a.png"]
