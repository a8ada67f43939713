"""Fixtures: a control-plane app on fake gRPC clients, a TestClient and the API token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.control import Settings, create_app
from services.control.clients import Clients

from .fakes import FakeChannel, FakeHealth, FakeTransmitter, fake_clients

TOKEN = "test-token-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(token=TOKEN, token_file=tmp_path / "absent-token", deadline_seconds=2.0)


@pytest.fixture
def clients() -> Clients:
    return fake_clients()


@pytest.fixture
def channel(clients: Clients) -> FakeChannel:
    assert isinstance(clients.channel, FakeChannel)
    return clients.channel


@pytest.fixture
def transmitter(clients: Clients) -> FakeTransmitter:
    assert isinstance(clients.transmitter, FakeTransmitter)
    return clients.transmitter


@pytest.fixture
def health(clients: Clients) -> dict[str, FakeHealth]:
    out = {}
    for name, h in clients.health.items():
        assert isinstance(h, FakeHealth)
        out[name] = h
    return out


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(
    settings: Settings, clients: Clients, registry: CollectorRegistry
) -> Iterator[TestClient]:
    app = create_app(settings, registry=registry, clients=clients)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
