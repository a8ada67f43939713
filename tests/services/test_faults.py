"""Nothing lost: crashes, restarts and load through the real processes of one stack.

Every image a transmitter accepts must end in exactly one fate it reports (predicted, lost
by the channel, or an error that names its cause), also when the channel emulator or the
receiver is killed with SIGKILL mid-run and restarted, and when many links and clients run
at once. All on 127.0.0.1, every wait bounded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.control.client import ControlClient
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.stack import Stack, StackPorts

from .stack_support import QUIET_ENV, write_tiny_dataset

PER_CLASS = 12  # 120 test images
FATES = {frame_pb2.FRAME_FATE_PREDICTED, frame_pb2.FRAME_FATE_LOST, frame_pb2.FRAME_FATE_ERROR}


@pytest.fixture(scope="module")
def stack(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults")
    data = write_tiny_dataset(tmp / "data", per_class=PER_CLASS)
    env = {
        **QUIET_ENV,
        "RKDSC_TRANSMITTER_CACHE_DIR": str(tmp / "cache"),
        "RKDSC_TRANSMITTER_MAX_ACTIVE_RUNS": "8",
        "RKDSC_CONTROL_RESTORE_SECONDS": "0.5",
    }
    with Stack.start(
        ports=StackPorts.free(),
        weights_dir=tiny_weights,
        data_dir=data,
        run_dir=tmp / "run",
        token_file=tmp / "token" / "control-token",
        env=env,
        ready_timeout=60,
        grace_seconds=10,
    ) as started:
        yield started


def _control(stack: Stack) -> ControlClient:
    return ControlClient(stack.control_url, stack.token, timeout=10)


def _transmitter(stack: Stack) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{stack.ports.transmitter}")


def _start_run(stack: Stack, num_images: int, rate: float, link_id: str = "") -> str:
    with _transmitter(stack) as channel:
        stub = services_pb2_grpc.TransmitterStub(channel)
        request = services_pb2.RunRequest(
            split="test", num_images=num_images, rate=rate, link_id=link_id
        )
        status: services_pb2.RunStatus = stub.StartRun(request, timeout=30)
    return status.run_id


def _get_run(stack: Stack, run_id: str) -> services_pb2.RunStatus:
    with _transmitter(stack) as channel:
        stub = services_pb2_grpc.TransmitterStub(channel)
        status: services_pb2.RunStatus = stub.GetRun(
            services_pb2.GetRunRequest(run_id=run_id), timeout=10
        )
    return status


def _wait_run(stack: Stack, run_id: str, timeout: float = 90.0) -> services_pb2.RunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _get_run(stack, run_id)
        if status.state not in ("loading", "running"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still running after {timeout} s: {status}")


def _wait_sent(stack: Stack, run_id: str, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _get_run(stack, run_id).sent >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not send {at_least} frames in {timeout} s")


def _restart(stack: Stack, name: str) -> None:
    stack.restart(name)
    stack.wait_ready(60)


def _assert_adds_up(status: services_pb2.RunStatus) -> None:
    assert status.state == "done", status
    assert status.sent == status.total
    assert status.predicted + status.lost + status.errors == status.total, status
    assert sum(status.errors_by_code.values()) == status.errors, status


def _classify(stack: Stack, n: int, prefix: str, rate: float = 0.0) -> list[frame_pb2.FrameResult]:
    """Stream ``n`` random images (ids ``prefix-i``) at ``rate`` img/s; every result."""
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)

    def requests() -> Iterator[services_pb2.ClassifyRequest]:
        for i in range(n):
            if rate > 0:
                time.sleep(1.0 / rate)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            raw = services_pb2.RawImage(height=32, width=32, channels=3, data=pixels.tobytes())
            yield services_pb2.ClassifyRequest(
                image_id=f"{prefix}-{i}", image=services_pb2.Image(raw=raw), label=i % 10
            )

    with _transmitter(stack) as channel:
        stub = services_pb2_grpc.TransmitterStub(channel)
        return list(stub.Classify(requests(), timeout=120))


def _assert_one_fate_each(results: list[frame_pb2.FrameResult], n: int, prefix: str) -> None:
    ids = [r.image_id for r in results]
    assert sorted(ids) == sorted(f"{prefix}-{i}" for i in range(n)), "missing or duplicate"
    for r in results:
        assert r.fate in FATES, r
        if r.fate == frame_pb2.FRAME_FATE_ERROR:
            assert r.error.split(":")[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), r.error


@pytest.mark.slow
class TestCrashes:
    def test_channel_emulator_killed_mid_stream_fails_in_flight_frames_and_recovers(
        self, stack: Stack
    ) -> None:
        with _control(stack) as control:
            # Frames spend 0.3 s in the emulator, so some are in flight when it dies.
            control.update_channel(delay_seconds=0.3, frame_loss_prob=0.0)
        n, results = 90, []
        streamer = threading.Thread(
            target=lambda: results.extend(_classify(stack, n, "crash-ch", rate=30.0))
        )
        streamer.start()
        time.sleep(1.2)
        assert stack.kill("channel") is not None
        time.sleep(0.3)
        _restart(stack, "channel")
        streamer.join(timeout=120)
        assert not streamer.is_alive()
        _assert_one_fate_each(results, n, "crash-ch")
        fates = Counter(r.fate for r in results)
        errors = [r.error for r in results if r.fate == frame_pb2.FRAME_FATE_ERROR]
        assert any(e.startswith("UNAVAILABLE: channel stream failed") for e in errors), errors
        last = max(results, key=lambda r: int(r.image_id.rsplit("-", 1)[1]))
        assert last.fate == frame_pb2.FRAME_FATE_PREDICTED, last  # served again after restart
        assert fates[frame_pb2.FRAME_FATE_PREDICTED] >= n // 3, fates
        # The control plane saw the restart and put its stored config back.
        deadline = time.monotonic() + 15
        with _control(stack) as control:
            while (now := control.get_channel())["delay_seconds"] != 0.3:
                assert time.monotonic() < deadline, now
                time.sleep(0.2)
            control.update_channel(delay_seconds=0.0)

    def test_receiver_killed_mid_run_and_restarted_the_report_adds_up(self, stack: Stack) -> None:
        with _control(stack) as control:
            control.update_channel(delay_seconds=0.2, frame_loss_prob=0.1)
        run_id = _start_run(stack, 120, rate=40.0)
        _wait_sent(stack, run_id, 30)
        assert stack.kill("receiver") is not None
        time.sleep(0.3)
        _restart(stack, "receiver")
        status = _wait_run(stack, run_id)
        _assert_adds_up(status)
        assert sum(status.errors_by_code.values()) == status.errors
        assert set(status.errors_by_code) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, status
        assert status.lost > 0  # the emulator's own fate still reaches the report
        assert status.predicted >= 40, status
        with _control(stack) as control:
            control.update_channel(delay_seconds=0.0, frame_loss_prob=0.0)

    def test_control_plane_restart_keeps_the_config_and_restores_the_emulator(
        self, stack: Stack
    ) -> None:
        with _control(stack) as control:
            control.update_channel(snr_db=-3.5, seed=99)
        stack.kill("control")
        _restart(stack, "control")
        stack.kill("channel")  # now the emulator forgets too
        _restart(stack, "channel")
        deadline = time.monotonic() + 15
        with _control(stack) as control:
            while (now := control.get_channel())["snr_db"] != -3.5:
                assert time.monotonic() < deadline, now
                time.sleep(0.2)
            assert now["seed"] == 99
            control.update_channel(snr_db=10.0)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.slow
class TestLoad:
    def test_many_links_and_clients_every_image_has_one_fate(self, stack: Stack) -> None:
        with _control(stack) as control:
            control.update_channel(frame_loss_prob=0.15, delay_seconds=0.0, erasure_prob=0.05)
        services = ("transmitter", "channel", "receiver")
        _classify(stack, 20, "warm-up")
        rss_before = {name: _rss_kib(stack.processes[name].pid) for name in services}
        runs = [_start_run(stack, 120, rate=0.0, link_id=f"load-{k}") for k in range(4)]
        outputs: dict[str, list[frame_pb2.FrameResult]] = {}
        clients = [
            threading.Thread(
                target=lambda p=f"cl{k}": outputs.__setitem__(p, _classify(stack, 40, p))
            )
            for k in range(4)
        ]
        for t in clients:
            t.start()
        statuses = [_wait_run(stack, run_id) for run_id in runs]
        for t in clients:
            t.join(timeout=120)
            assert not t.is_alive()
        for status in statuses:
            _assert_adds_up(status)
        assert sum(s.lost for s in statuses) > 0
        for prefix, results in outputs.items():
            _assert_one_fate_each(results, 40, prefix)
        latencies = sorted(
            r.timings.end_to_end_seconds
            for results in outputs.values()
            for r in results
            if r.fate == frame_pb2.FRAME_FATE_PREDICTED
        )
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"load: {len(latencies)} predicted, p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms")
        rss_after = {name: _rss_kib(stack.processes[name].pid) for name in services}
        for name in services:  # bounded queues: no growth with the number of frames
            assert rss_after[name] - rss_before[name] < 100 * 1024, (name, rss_before, rss_after)
        with _control(stack) as control:
            control.update_channel(frame_loss_prob=0.0, erasure_prob=0.0)
