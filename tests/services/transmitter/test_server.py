"""The server around the API: health, reflection, metrics, graceful shutdown, entry point."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.pb import frame_pb2
from services.transmitter.server import SERVICE_NAME
from services.transmitter.settings import PolicySettings, Settings

from ._support import FakeChannel, raw_request, run, running_stack

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestServer:
    def test_health_is_serving(self, tx_weights: Path) -> None:
        async def scenario() -> list[int]:
            async with running_stack(tx_weights) as stack:
                stub = health_pb2_grpc.HealthStub(stack.channel)
                return [
                    (
                        await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                    ).status
                    for name in ("", SERVICE_NAME)
                ]

        assert run(scenario()) == [SERVING, SERVING]

    def test_reflection_lists_the_service(self, tx_weights: Path) -> None:
        async def scenario() -> set[str]:
            async with running_stack(tx_weights) as stack:
                stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel)
                call = stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
                names: set[str] = set()
                async for resp in call:
                    names |= {s.name for s in resp.list_services_response.service}
                return names

        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= run(scenario())

    def test_metrics_count_frames_symbols_and_calls(self, tx_weights: Path) -> None:
        async def scenario() -> dict[str, float | None]:
            async with running_stack(tx_weights) as stack:
                await stack.classify([raw_request("a"), raw_request("lose-b")])
                return {
                    "predicted": stack.sample(
                        "rkdsc_transmitter_frames_total", {"fate": "predicted"}
                    ),
                    "lost": stack.sample("rkdsc_transmitter_frames_total", {"fate": "lost"}),
                    "error": stack.sample("rkdsc_transmitter_frames_total", {"fate": "error"}),
                    "images": stack.sample("rkdsc_transmitter_images_total"),
                    "symbols": stack.sample("rkdsc_transmitter_symbols_total"),
                    "per_frame_le_64": stack.sample(
                        "rkdsc_transmitter_symbols_per_frame_bucket", {"le": "64.0"}
                    ),
                    "per_frame_le_32": stack.sample(
                        "rkdsc_transmitter_symbols_per_frame_bucket", {"le": "32.0"}
                    ),
                    "encode": stack.sample("rkdsc_transmitter_encode_seconds_count"),
                    "e2e": stack.sample("rkdsc_transmitter_end_to_end_seconds_count"),
                    "in_flight": stack.sample("rkdsc_transmitter_in_flight"),
                    "version": stack.sample("rkdsc_transmitter_config_version"),
                    "target": stack.sample("rkdsc_transmitter_target_accuracy"),
                    "confidence": stack.sample("rkdsc_transmitter_policy_confidence"),
                    "fixed": stack.sample("rkdsc_transmitter_policy_mode", {"mode": "fixed"}),
                    "snr": stack.sample("rkdsc_transmitter_snr_estimate_db", {"link": "default"}),
                    "calls": stack.sample(
                        "rkdsc_transmitter_grpc_calls_total", {"method": "Classify", "code": "OK"}
                    ),
                }

        m = run(scenario())
        assert (m["predicted"], m["lost"], m["error"], m["images"]) == (1, 1, 0, 2)
        assert (m["symbols"], m["per_frame_le_64"], m["per_frame_le_32"]) == (128, 2, 0)
        assert (m["encode"], m["e2e"], m["in_flight"]) == (2, 2, 0)
        assert (m["version"], m["fixed"], m["calls"]) == (1, 1, 1)
        assert (m["target"], m["confidence"]) == pytest.approx((0.9, 0.95))
        assert m["snr"] is not None and 10.0 < m["snr"] <= 20.0

    def test_shutdown_reports_not_serving_and_drains_in_flight_frames(
        self, tx_weights: Path
    ) -> None:
        async def scenario() -> tuple[list[frame_pb2.FrameResult], int]:
            fake = FakeChannel(delay_seconds=0.3)
            async with running_stack(tx_weights, fake) as stack:
                call = stack.stub.Classify(iter([raw_request("a"), raw_request("b")]), timeout=10)
                results: list[frame_pb2.FrameResult] = []

                async def collect() -> None:
                    results.extend([r async for r in call])

                collector = asyncio.create_task(collect())
                for _ in range(200):  # until both frames are on the wire
                    if len(fake.frames) == 2:
                        break
                    await asyncio.sleep(0.01)
                stopper = asyncio.create_task(stack.tx.stop())
                await asyncio.sleep(0.05)
                health = health_pb2_grpc.HealthStub(stack.channel)
                status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
                await asyncio.wait_for(stopper, 10)
                await asyncio.wait_for(collector, 5)
                return results, status

        results, status = run(scenario())
        assert status == NOT_SERVING
        assert sorted(r.image_id for r in results) == ["a", "b"]
        assert all(r.fate == frame_pb2.FRAME_FATE_PREDICTED for r in results)


class TestEntryPoint:
    @pytest.mark.slow
    def test_module_serves_metrics_and_stops_on_sigterm(self, tx_weights: Path) -> None:
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "RKDSC_TRANSMITTER_PORT": str(port),
            "RKDSC_TRANSMITTER_METRICS_PORT": str(metrics_port),
            "RKDSC_TRANSMITTER_WEIGHTS_DIR": str(tx_weights),
            "RKDSC_TRANSMITTER_CHANNEL_TARGET": f"127.0.0.1:{free_port()}",
            "RKDSC_TRANSMITTER_TORCH_THREADS": "1",
            "RKDSC_TRANSMITTER_GRACE_SECONDS": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.transmitter"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            status = None
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        req = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                        status = stub.Check(req, timeout=1).status
                        break
                    except grpc.RpcError:
                        time.sleep(0.2)
            assert status == SERVING, proc.stdout.read().decode() if proc.poll() else status
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            assert "rkdsc_transmitter_config_version 1.0" in text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


class TestSettings:
    def test_environment_with_nested_policy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RKDSC_TRANSMITTER_PORT", "6000")
        monkeypatch.setenv("RKDSC_TRANSMITTER_POLICY__MODE", "adaptive")
        monkeypatch.setenv("RKDSC_TRANSMITTER_POLICY__TARGET_ACCURACY", "0.8")
        monkeypatch.setenv("RKDSC_TRANSMITTER_POLICY__CONFIDENCE", "0.99")
        s = Settings()
        assert (s.port, s.policy.mode, s.policy.target_accuracy) == (6000, "adaptive", 0.8)
        assert (s.policy.confidence, PolicySettings().confidence) == (0.99, 0.95)
        assert (s.host, s.metrics_port, s.channel_target) == ("127.0.0.1", 9101, "127.0.0.1:50052")

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("link_id", "bad id"),
            ("dataset", "imagenet"),
            ("snr_smoothing", 0.0),
            ("max_in_flight", 0),
            ("assumed_snr_db", 99.0),
            ("policy", {"confidence": 1.0}),
            ("policy", {"confidence": 0.4}),
        ],
    )
    def test_invalid_values_fail_fast(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=field):
            Settings(**{field: value})  # type: ignore[arg-type]

    def test_initial_length_must_be_allowed(self, tx_weights: Path) -> None:
        from services._main import StartupError
        from services.transmitter.server import build_server

        settings = Settings(weights_dir=tx_weights, port=0, policy={"fixed_length": 12})  # type: ignore[arg-type]
        with pytest.raises(StartupError, match="RKDSC_TRANSMITTER_POLICY__FIXED_LENGTH"):
            build_server(settings)
