"""The control plane keeps applied configurations in SQLite and restores restarted services."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.control import Settings, create_app
from services.control.clients import Clients, ServiceError
from services.control.persist import ConfigStore, restore_once

from .conftest import TOKEN
from .fakes import FakeChannel, FakeTransmitter, fake_clients

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _settings(tmp_path: Path, state_file: Path | None) -> Settings:
    return Settings(
        token=TOKEN,
        token_file=tmp_path / "absent-token",
        deadline_seconds=2.0,
        state_file=state_file,
        restore_seconds=3600,  # the tests call restore_once themselves
    )


def _restart_channel(clients: Clients) -> FakeChannel:
    """What a restarted emulator looks like: default settings at version 1."""
    fresh = FakeChannel()
    clients.channel = fresh
    return fresh


def _restore_once(client: TestClient, app: Any) -> list[str]:
    """:func:`restore_once` on the app's own event loop: its locks belong to that loop (a
    second loop, as ``asyncio.run`` makes, can deadlock with the app's restore task)."""
    result: list[str] = client.portal.call(restore_once, app.state.control)
    return result


class TestConfigStore:
    def test_round_trip_and_overwrite(self, tmp_path: Path) -> None:
        store = ConfigStore(tmp_path / "sub" / "control.sqlite")
        assert store.get("channel") is None
        store.put("channel", {"snr_db": 3.0}, 4)
        store.put("channel", {"snr_db": 5.0}, 5)
        got = ConfigStore(store.path).get("channel")  # another process' view
        assert got is not None
        assert (got.body, got.version) == ({"snr_db": 5.0}, 5)

    def test_a_file_that_is_not_sqlite_is_refused_at_startup(self, tmp_path: Path) -> None:
        bad = tmp_path / "control.sqlite"
        bad.write_bytes(b"this is not a database, just sixteen+ bytes of text")
        with pytest.raises(sqlite3.DatabaseError):
            ConfigStore(bad)
        with pytest.raises(ValueError, match=r"RKDSC_CONTROL_STATE_FILE=.*cannot be used"):
            create_app(_settings(tmp_path, bad), clients=fake_clients())


class TestRestore:
    def test_put_is_stored_with_the_version_the_service_answered(self, tmp_path: Path) -> None:
        state_file = tmp_path / "control.sqlite"
        app = create_app(_settings(tmp_path, state_file), clients=fake_clients())
        with TestClient(app) as client:
            resp = client.put(
                "/v1/channel", json={"snr_db": 3.5, "model": "rayleigh"}, headers=AUTH
            )
            assert resp.status_code == 200, resp.text
            resp = client.put("/v1/transmitter", json={"fixed_length": 32}, headers=AUTH)
            assert resp.status_code == 200, resp.text
        store = ConfigStore(state_file)
        channel, policy = store.get("channel"), store.get("transmitter")
        assert channel is not None and policy is not None
        assert channel.body["snr_db"] == 3.5 and channel.body["model"] == "rayleigh"
        assert channel.version == 2
        assert policy.body["fixed_length"] == 32 and policy.version == 4

    def test_restarted_services_get_the_stored_config_back(self, tmp_path: Path) -> None:
        state_file = tmp_path / "control.sqlite"
        clients = fake_clients()
        registry = CollectorRegistry()
        app = create_app(_settings(tmp_path, state_file), registry=registry, clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"snr_db": -2.0, "seed": 11}, headers=AUTH)
            client.put("/v1/transmitter", json={"fixed_length": 16}, headers=AUTH)
            fresh = _restart_channel(clients)
            transmitter = clients.transmitter
            assert isinstance(transmitter, FakeTransmitter)
            transmitter.policy.version = 1  # the transmitter restarted too
            restored = _restore_once(client, app)
            assert restored == ["channel", "transmitter"]
            assert fresh.settings.snr_db == -2.0 and fresh.settings.seed == 11
            assert transmitter.policy.fixed_length == 16
            body = client.get("/v1/channel").json()
            assert body["snr_db"] == -2.0 and body["version"] == 2
            # Restored once: the stored version follows, so nothing happens next time.
            assert _restore_once(client, app) == []
        value = registry.get_sample_value(
            "rkdsc_control_config_restores_total", {"resource": "channel"}
        )
        assert value == 1.0

    def test_an_update_right_after_a_restart_merges_onto_the_stored_config(
        self, tmp_path: Path
    ) -> None:
        # Before the restore loop has run: the update must not merge onto the defaults.
        clients = fake_clients()
        app = create_app(_settings(tmp_path, tmp_path / "c.sqlite"), clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"model": "rayleigh", "snr_db": 5.0}, headers=AUTH)
            client.put("/v1/transmitter", json={"fixed_length": 16}, headers=AUTH)
            fresh = _restart_channel(clients)
            transmitter = clients.transmitter
            assert isinstance(transmitter, FakeTransmitter)
            transmitter.policy.version = 1
            transmitter.policy.fixed_length = 64  # restarted: its defaults again
            resp = client.put("/v1/channel", json={"erasure_prob": 0.1}, headers=AUTH)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert (body["model"], body["snr_db"], body["erasure_prob"]) == ("rayleigh", 5.0, 0.1)
            assert fresh.settings.snr_db == 5.0
            resp = client.put("/v1/transmitter", json={"confidence": 0.9}, headers=AUTH)
            assert resp.status_code == 200 and resp.json()["fixed_length"] == 16
            # What is stored now is the merged configuration: a later restore keeps all of it.
            assert _restore_once(client, app) == []
            assert app.state.control.store.get("channel").body["erasure_prob"] == 0.1

    def test_the_policy_confidence_is_stored_and_restored(self, tmp_path: Path) -> None:
        state_file = tmp_path / "control.sqlite"
        clients = fake_clients()
        app = create_app(_settings(tmp_path, state_file), clients=clients)
        with TestClient(app) as client:
            resp = client.put("/v1/transmitter", json={"confidence": 0.75}, headers=AUTH)
            assert resp.status_code == 200, resp.text
            stored = ConfigStore(state_file).get("transmitter")
            assert stored is not None and stored.body["confidence"] == 0.75
            transmitter = clients.transmitter
            assert isinstance(transmitter, FakeTransmitter)
            transmitter.policy.confidence, transmitter.policy.version = 0.95, 1  # restarted
            assert _restore_once(client, app) == ["transmitter"]
            assert transmitter.set_calls[-1].HasField("confidence")
            assert client.get("/v1/transmitter").json()["confidence"] == 0.75

    def test_a_policy_stored_without_confidence_keeps_the_transmitters(
        self, tmp_path: Path
    ) -> None:
        state_file = tmp_path / "control.sqlite"
        old = {"length_policy": "fixed", "fixed_length": 32, "target_accuracy": 0.8}
        ConfigStore(state_file).put("transmitter", old, 5)  # stored before confidence existed
        clients = fake_clients()
        app = create_app(_settings(tmp_path, state_file), clients=clients)
        with TestClient(app) as client:
            transmitter = clients.transmitter
            assert isinstance(transmitter, FakeTransmitter)
            for _ in range(100):  # restores once at startup
                if transmitter.set_calls:
                    break
                time.sleep(0.02)
            (sent,) = transmitter.set_calls
            assert sent.fixed_length == 32 and not sent.HasField("confidence")
            body = client.get("/v1/transmitter").json()
        assert (body["fixed_length"], body["confidence"]) == (32, 0.95)

    def test_a_newer_config_set_elsewhere_is_left_alone(self, tmp_path: Path) -> None:
        clients = fake_clients()
        app = create_app(_settings(tmp_path, tmp_path / "c.sqlite"), clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"snr_db": 1.0}, headers=AUTH)
            channel = clients.channel
            assert isinstance(channel, FakeChannel)
            channel.settings.snr_db = 20.0  # changed over gRPC directly: version goes up
            channel.settings.version = 9
            assert _restore_once(client, app) == []
            assert channel.settings.snr_db == 20.0

    def test_a_restarted_control_plane_restores_from_the_file(self, tmp_path: Path) -> None:
        state_file = tmp_path / "control.sqlite"
        clients = fake_clients()
        with TestClient(create_app(_settings(tmp_path, state_file), clients=clients)) as client:
            client.put("/v1/channel", json={"erasure_prob": 0.25}, headers=AUTH)
        fresh = _restart_channel(clients)  # everything restarted
        app = create_app(_settings(tmp_path, state_file), clients=clients)
        with TestClient(app) as client:  # restores once at startup
            for _ in range(100):
                if fresh.settings.version > 1:
                    break
                time.sleep(0.02)
            assert _restore_once(client, app) == []
        assert fresh.settings.erasure_prob == pytest.approx(0.25)
        assert fresh.settings.version == 2

    def test_an_unreachable_service_is_skipped_and_retried(self, tmp_path: Path) -> None:
        clients = fake_clients()
        app = create_app(_settings(tmp_path, tmp_path / "c.sqlite"), clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"snr_db": 4.0}, headers=AUTH)
            fresh = _restart_channel(clients)
            fresh.fail = ServiceError("channel", grpc.StatusCode.UNAVAILABLE, "down")
            assert _restore_once(client, app) == []
            fresh.fail = None
            assert _restore_once(client, app) == ["channel"]
            assert fresh.settings.snr_db == 4.0

    def test_without_a_state_file_nothing_is_kept(self, tmp_path: Path) -> None:
        clients = fake_clients()
        app = create_app(_settings(tmp_path, None), clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"snr_db": 4.0}, headers=AUTH)
            _restart_channel(clients)
            assert _restore_once(client, app) == []
        assert not list(tmp_path.glob("*.sqlite"))

    def test_a_stored_config_the_restarted_service_refuses_is_discarded(
        self, tmp_path: Path
    ) -> None:
        clients = fake_clients()
        registry = CollectorRegistry()
        app = create_app(
            _settings(tmp_path, tmp_path / "c.sqlite"), registry=registry, clients=clients
        )
        transmitter = clients.transmitter
        assert isinstance(transmitter, FakeTransmitter)
        with TestClient(app) as client:
            first = client.put("/v1/transmitter", json={"fixed_length": 128}, headers=AUTH)
            assert first.status_code == 200, first.text
            # Restarted with a codec that has no L = 128: the stored policy cannot come back.
            transmitter.policy.version = 1
            transmitter.policy.fixed_length = 64
            transmitter.allowed_lengths = {16, 32, 64}
            resp = client.put("/v1/transmitter", json={"fixed_length": 32}, headers=AUTH)
            assert resp.status_code == 200, resp.text  # not blocked by the stored 128
            assert resp.json()["fixed_length"] == 32
            stored = app.state.control.store.get("transmitter")
            assert stored is not None and stored.body["fixed_length"] == 32
            assert _restore_once(client, app) == []
        rejected = registry.get_sample_value(
            "rkdsc_control_config_restores_rejected_total", {"resource": "transmitter"}
        )
        assert rejected == 1.0

    def test_a_restore_never_overwrites_a_newer_update_in_the_store(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clients = fake_clients()
        app = create_app(_settings(tmp_path, tmp_path / "c.sqlite"), clients=clients)
        with TestClient(app) as client:
            client.put("/v1/channel", json={"snr_db": 5.0}, headers=AUTH)
        _restart_channel(clients)
        state = app.state.control
        store = state.store
        put = store.put

        storing = threading.Event()

        def slow_put(target: str, body: dict, version: int) -> None:  # type: ignore[type-arg]
            if body.get("snr_db") == 5.0:
                storing.set()
                time.sleep(0.3)  # the restore's write comes late
            put(target, body, version)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "put", slow_put)

        async def race() -> None:
            restoring = asyncio.create_task(restore_once(state))
            # the restore has applied 5 dB and is storing it
            assert await asyncio.to_thread(storing.wait, 10.0)
            async with state.channel_lock:  # a REST update, as the route makes it
                await asyncio.to_thread(put, "channel", {"snr_db": 20.0}, 3)
            await restoring

        asyncio.run(race())
        stored = store.get("channel")
        assert stored is not None and stored.body["snr_db"] == 20.0
