"""The local stack: the four real services as child processes, wired, ready, run, stopped."""

from __future__ import annotations

import importlib.util
import io
import os
import queue
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from rkdsc_core.channel import Channel, ChannelConfig, frame_generator
from rkdsc_core.data import to_tensor
from rkdsc_core.link import load_link
from services.control.client import ControlClient
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.stack import Stack, StackError, StackPorts, write_token_file

from .stack_support import QUIET_ENV, unstarted_stack, with_eval_table, write_tiny_dataset

_MISSING = [
    name
    for name in ("transmitter", "channel", "receiver")
    if importlib.util.find_spec(f"services.{name}") is None
]
requires_services = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the stack needs services.{', services.'.join(_MISSING)}, not available yet",
)

GRACE_SECONDS = 10.0


@pytest.fixture(scope="module")
def stack(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if _MISSING:
        pytest.skip(f"services.{', services.'.join(_MISSING)} not available yet")
    tmp = tmp_path_factory.mktemp("stack")
    weights = with_eval_table(tiny_weights, tmp / "weights")
    data = write_tiny_dataset(tmp / "data")
    env = {**QUIET_ENV, "RKDSC_TRANSMITTER_CACHE_DIR": str(tmp / "cache")}
    with Stack.start(
        ports=StackPorts.free(),
        weights_dir=weights,
        data_dir=data,
        run_dir=tmp / "run",
        token_file=tmp / "token" / "control-token",
        env=env,
        ready_timeout=45,
        grace_seconds=GRACE_SECONDS,
    ) as started:
        yield started


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _classify(stack: Stack, images: list[np.ndarray]) -> list[services_pb2.FrameResult]:
    """Stream ``images`` through the real transmitter; results in image order."""
    requests = [
        services_pb2.ClassifyRequest(
            image_id=f"img-{i}", image=services_pb2.Image(encoded=_png(px)), label=i % 10
        )
        for i, px in enumerate(images)
    ]
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.transmitter}") as channel:
        stub = services_pb2_grpc.TransmitterStub(channel)
        results = list(stub.Classify(iter(requests), timeout=60))
    by_id = {r.image_id: r for r in results}
    assert len(by_id) == len(images), results
    return [by_id[f"img-{i}"] for i in range(len(images))]


@requires_services
@pytest.mark.slow
class TestEndToEnd:
    """The networked system against the in-process pipeline, frame by frame."""

    def test_every_frame_equals_the_in_process_pipeline(
        self, stack: Stack, tiny_weights: Path
    ) -> None:
        settings = {
            "model": "rician",
            "snr_db": 3.0,
            "k_factor": 2.0,
            "fading": "fast",
            "erasure_prob": 0.1,
            "seed": 41,
        }
        with ControlClient(stack.control_url, stack.token, timeout=10) as client:
            client.update_channel(**settings)
            client.update_transmitter(length_policy="fixed", fixed_length=32)
        rng = np.random.default_rng(5)
        images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
        results = _classify(stack, images)

        pipeline = load_link(tiny_weights).pipeline
        channel = Channel(
            ChannelConfig(model="rician", fading="fast", k_factor=2.0, erasure_prob=0.1)
        )
        for px, r in zip(images, results, strict=True):
            assert r.fate == frame_pb2.FRAME_FATE_PREDICTED, r
            assert r.num_symbols == 32 and r.prediction.channel_snr_db == 3.0
            with torch.no_grad():
                tx = pipeline.transmit(to_tensor(px[None]), r.tx_snr_db, r.num_symbols)
                gen = frame_generator(41, r.link_id, r.sequence)
                out = pipeline.apply_channel(channel, tx, 3.0, generator=gen)
                logits, _ = pipeline.receive(out.y, out.received, pipeline.estimate("pilot", out))
            probs = torch.softmax(logits, dim=1)[0]
            assert r.prediction.class_index == int(probs.argmax())
            assert np.allclose(r.prediction.probabilities, probs.numpy(), rtol=0, atol=1e-6)

    def test_live_channel_change_reaches_subsequent_frames(self, stack: Stack) -> None:
        rng = np.random.default_rng(6)
        images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
        with ControlClient(stack.control_url, stack.token, timeout=10) as client:
            client.update_channel(model="awgn", snr_db=20.0, erasure_prob=0.0)
            before = _classify(stack, images)
            client.update_channel(snr_db=-6.0)
            after = _classify(stack, images)
        v_before = {r.channel_config_version for r in before}
        v_after = {r.channel_config_version for r in after}
        assert len(v_before) == len(v_after) == 1 and max(v_before) < min(v_after)
        assert {r.prediction.channel_snr_db for r in before} == {20.0}
        assert {r.prediction.channel_snr_db for r in after} == {-6.0}

    def test_adaptive_policy_sends_fewer_symbols_than_fixed_l_max(self, stack: Stack) -> None:
        rng = np.random.default_rng(7)
        images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
        with ControlClient(stack.control_url, stack.token, timeout=10) as client:
            client.update_channel(model="awgn", snr_db=20.0, erasure_prob=0.0)
            client.update_transmitter(length_policy="fixed", fixed_length=64)
            fixed = _classify(stack, images)
            # The made-up eval table reaches 0.7 at L=16 near 20 dB (and L=32 near 10 dB).
            client.update_transmitter(length_policy="adaptive", target_accuracy=0.7)
            _classify(stack, images)  # lets the SNR belief converge to the receiver's estimate
            adaptive = _classify(stack, images)
        assert {r.num_symbols for r in fixed} == {64}
        assert all(r.num_symbols < 64 for r in adaptive), [r.num_symbols for r in adaptive]


@requires_services
@pytest.mark.slow
class TestStack:
    def test_readyz_reports_every_service_serving(self, stack: Stack) -> None:
        resp = httpx.get(f"{stack.control_url}/readyz", timeout=5)
        assert resp.status_code == 200
        assert set(resp.json()["services"].values()) == {"SERVING"}

    def test_generated_token_file_is_private(self, stack: Stack) -> None:
        assert stack.token_file is not None
        assert stat.S_IMODE(stack.token_file.stat().st_mode) == 0o600
        assert stack.token_file.read_text().strip() == stack.token

    def test_service_metrics_endpoints_answer(self, stack: Stack) -> None:
        p = stack.ports
        for port in (p.transmitter_metrics, p.channel_metrics, p.receiver_metrics, p.control):
            resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert resp.status_code == 200
            assert "rkdsc_" in resp.text

    def test_run_completes_through_the_stack(self, stack: Stack) -> None:
        with ControlClient(stack.control_url, stack.token, timeout=10) as client:
            channel = client.update_channel(snr_db=12.0, model="awgn")
            assert channel["snr_db"] == 12.0
            policy = client.update_transmitter(length_policy="fixed", fixed_length=16)
            assert policy["fixed_length"] == 16
            run = client.start_run(num_images=6)
            done = client.wait_run(run["run_id"], timeout=40, poll_seconds=0.25)
        assert done["state"] == "done", done
        assert done["total"] == 6
        assert done["fates"] == {"predicted": 6, "lost": 0, "error": 0, "error_codes": {}}
        assert done["symbols_per_image"] == 16.0
        assert 0.0 <= done["accuracy"] <= 1.0
        stats = httpx.get(f"{stack.control_url}/v1/stats", timeout=5).json()
        assert run["run_id"] in [r["run_id"] for r in stats["runs"]]

    def test_invalid_length_is_refused_by_the_transmitter(self, stack: Stack) -> None:
        resp = httpx.put(
            f"{stack.control_url}/v1/transmitter",
            json={"length_policy": "fixed", "fixed_length": 7},
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=5,
        )
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", "fixed_length"]

    def test_stop_terminates_every_service_within_the_grace(self, stack: Stack) -> None:
        pids = [proc.pid for proc in stack.processes.values()]
        start = time.monotonic()
        codes = stack.stop()
        elapsed = time.monotonic() - start
        assert elapsed < GRACE_SECONDS
        assert codes == dict.fromkeys(("receiver", "channel", "transmitter", "control"), 0)
        assert stack.ports.in_use() == []
        assert stack.token_file is not None and not stack.token_file.exists()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def _free_base_port() -> int:
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20_000, 60_000)
        if not StackPorts.from_base(base).in_use():
            return base
    raise RuntimeError("no 7 consecutive free ports found")


def _read_lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


@requires_services
@pytest.mark.slow
def test_rkdsc_up_stops_cleanly_on_sigterm(tiny_weights: Path, tmp_path: Path) -> None:
    base = _free_base_port()
    run_dir = tmp_path / "run"
    token_file = tmp_path / "control-token"
    env = {**os.environ, **QUIET_ENV}
    argv = [
        sys.executable,
        "-c",
        "import sys; from rkdsc_core.cli import main; sys.argv[0] = 'rkdsc'; main()",
        "up",
        "--base-port",
        str(base),
        "--weights",
        str(tiny_weights),
        "--run-dir",
        str(run_dir),
        "--token-file",
        str(token_file),
        "--ready-timeout",
        "45",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 50
        while not any(line.startswith("Ctrl-C stops") for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            assert proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        text = "".join(seen)
        assert f"REST http://127.0.0.1:{base + 6}" in text
        assert f"gRPC 127.0.0.1:{base}" in text
        assert str(token_file) in text
        assert httpx.get(f"http://127.0.0.1:{base + 6}/readyz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE_SECONDS + 5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert StackPorts.from_base(base).in_use() == []
    assert not token_file.exists()
    assert (run_dir / "transmitter.log").is_file()


class TestStackPorts:
    def test_base_port_gives_seven_consecutive_ports(self) -> None:
        ports = StackPorts.from_base(40000)
        assert (ports.transmitter, ports.channel, ports.receiver) == (40000, 40001, 40002)
        assert (ports.transmitter_metrics, ports.receiver_metrics) == (40003, 40005)
        assert ports.control == 40006

    def test_base_port_out_of_range_is_refused(self) -> None:
        with pytest.raises(ValueError, match="base-port"):
            StackPorts.from_base(65530)

    def test_free_ports_are_distinct_and_free(self) -> None:
        ports = StackPorts.free()
        assert len(set(ports.as_dict().values())) == 7
        assert ports.in_use() == []

    def test_start_refuses_ports_in_use(self, tmp_path: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            busy = s.getsockname()[1]
            free = StackPorts.free()
            ports = StackPorts(**{**free.as_dict(), "control": busy})
            with pytest.raises(StackError, match=f"{busy}"):
                Stack.start(ports=ports, run_dir=tmp_path / "run", token="t")


class TestTokenFile:
    def test_token_file_is_written_private(self, tmp_path: Path) -> None:
        path = tmp_path / "sub" / "control-token"
        write_token_file(path, "abc")
        assert path.read_text() == "abc\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


class TestChildEnv:
    def test_model_services_get_one_torch_thread_unless_told(self, tmp_path: Path) -> None:
        stack = unstarted_stack(tmp_path)
        for name in ("transmitter", "receiver"):
            key = f"RKDSC_{name.upper()}_TORCH_THREADS"
            assert stack._child_env(name, {}, None, None)[key] == "1"
            assert stack._child_env(name, {key: "3"}, None, None)[key] == "3"
        assert not any("TORCH_THREADS" in k for k in stack._child_env("channel", {}, None, None))
