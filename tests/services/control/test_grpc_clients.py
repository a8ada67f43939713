"""The control plane on its real gRPC clients, against in-process servers and closed ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from services.control import Settings, create_app
from services.pb import services_pb2, services_pb2_grpc

from .conftest import TOKEN


class _Emulator(services_pb2_grpc.ChannelEmulatorServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.settings = services_pb2.ChannelSettings(
            model="awgn", snr_db=0.0, fading="block", seed=1, version=1
        )

    def GetSettings(self, request: Any, context: Any) -> Any:
        return self.settings

    def SetSettings(self, request: Any, context: Any) -> Any:
        if request.model == "rician" and request.k_factor == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "k_factor must be > 0 for rician")
        new = services_pb2.ChannelSettings()
        new.CopyFrom(request)
        new.version = self.settings.version + 1
        self.settings = new
        return new


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def emulator_target() -> Iterator[tuple[str, _Emulator, Any]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    emulator = _Emulator()
    services_pb2_grpc.add_ChannelEmulatorServicer_to_server(emulator, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", emulator, health_servicer
    finally:
        server.stop(grace=None).wait(timeout=5)


class TestGrpcClients:
    def test_update_channel_goes_over_grpc(
        self, emulator_target: tuple[str, _Emulator, Any]
    ) -> None:
        target, emulator, _ = emulator_target
        closed = f"127.0.0.1:{_closed_port()}"
        settings = Settings(
            token=TOKEN,
            channel_target=target,
            transmitter_target=closed,
            receiver_target=closed,
            deadline_seconds=3,
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
            ok = client.put("/v1/channel", json={"snr_db": 7.5}, headers=auth)
            rejected = client.put(
                "/v1/channel", json={"model": "rician", "k_factor": 0}, headers=auth
            )
            policy = client.get("/v1/transmitter")
            ready = client.get("/readyz")
        assert ok.status_code == 200 and ok.json()["version"] == 2
        assert emulator.settings.snr_db == 7.5
        assert rejected.status_code == 422
        assert rejected.json()["detail"][0]["loc"] == ["body", "k_factor"]
        assert emulator.settings.model == "awgn"
        assert policy.status_code == 503
        assert f"transmitter at {closed} is unavailable" in policy.json()["detail"]
        assert ready.status_code == 503
        assert ready.json()["services"]["channel"] == "SERVING"
        assert ready.json()["not_ready"] == ["transmitter", "receiver"]

    def test_readyz_sees_not_serving(self, emulator_target: tuple[str, _Emulator, Any]) -> None:
        target, _, health_servicer = emulator_target
        health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        settings = Settings(
            token=TOKEN,
            channel_target=target,
            transmitter_target=target,
            receiver_target=target,
            deadline_seconds=3,
        )
        with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
            resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["services"] == dict.fromkeys(
            ("transmitter", "channel", "receiver"), "NOT_SERVING"
        )
