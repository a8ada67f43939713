"""/v1/channel: open reads, authenticated partial updates validated before anything is sent."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.control import Settings, create_app
from services.control.clients import Clients, ServiceError

from .conftest import TOKEN
from .fakes import FakeChannel


class TestReadChannel:
    def test_read_channel_is_open(self, client: TestClient) -> None:
        resp = client.get("/v1/channel")
        assert resp.status_code == 200
        assert resp.json() == {
            "model": "awgn",
            "snr_db": 10.0,
            "fading": "block",
            "k_factor": 0.0,
            "erasure_prob": 0.0,
            "frame_loss_prob": 0.0,
            "seed": 7,
            "delay_seconds": 0.0,
            "version": 1,
        }

    def test_read_channel_unavailable_is_503(
        self, client: TestClient, channel: FakeChannel
    ) -> None:
        channel.fail = ServiceError(
            "channel", grpc.StatusCode.UNAVAILABLE, "connection refused", "127.0.0.1:50052"
        )
        resp = client.get("/v1/channel")
        assert resp.status_code == 503
        assert "channel emulator at 127.0.0.1:50052 is unavailable" in resp.json()["detail"]


class TestUpdateChannel:
    def test_update_channel_merges_partial_update(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        resp = client.put("/v1/channel", json={"snr_db": -4.5, "erasure_prob": 0.1}, headers=auth)
        assert resp.status_code == 200
        body = resp.json()
        assert body["snr_db"] == -4.5
        assert body["erasure_prob"] == 0.1  # float32 on the wire, shown as sent
        assert body["model"] == "awgn" and body["seed"] == 7  # kept
        assert body["version"] == 2
        (sent,) = channel.set_calls
        assert sent.model == "awgn" and sent.fading == "block" and sent.seed == 7
        assert sent.snr_db == pytest.approx(-4.5)

    def test_update_channel_switches_model(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        resp = client.put(
            "/v1/channel", json={"model": "rician", "k_factor": 3, "fading": "fast"}, headers=auth
        )
        assert resp.status_code == 200
        assert (channel.settings.model, channel.settings.fading) == ("rician", "fast")
        assert channel.settings.k_factor == pytest.approx(3.0)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("snr_db", 61),
            ("snr_db", -30.5),
            ("snr_db", "loud"),
            ("model", "awgm"),
            ("fading", "slow"),
            ("k_factor", -1),
            ("erasure_prob", 1.0),
            ("erasure_prob", 0.99999999),  # 1.0 as the float32 the emulator holds
            ("k_factor", 3.5e38),  # infinite as a float32
            ("frame_loss_prob", -0.1),
            ("delay_seconds", -0.01),
            ("seed", -1),
            ("seed", 2**63),
            ("delay_seconds", 61),
            ("snr", 10),
            ("snr_db", None),
            ("snr_db", True),  # not 1 dB
            ("seed", True),
            ("delay_seconds", False),
        ],
    )
    def test_update_channel_invalid_value_is_422_naming_the_field(
        self,
        client: TestClient,
        channel: FakeChannel,
        auth: dict[str, str],
        field: str,
        value: object,
    ) -> None:
        resp = client.put("/v1/channel", json={field: value}, headers=auth)
        assert resp.status_code == 422
        assert field in resp.text
        assert channel.set_calls == []
        assert channel.settings.version == 1

    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
    def test_a_non_finite_value_is_422_not_500(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str], value: str
    ) -> None:
        # JSON has no NaN, but Python's parser reads these; the 422 body must still be JSON.
        body = f'{{"snr_db": {value}}}'
        headers = auth | {"Content-Type": "application/json"}
        resp = client.put("/v1/channel", content=body, headers=headers)
        assert resp.status_code == 422, resp.text
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "snr_db"] and error["input"] in ("nan", "inf", "-inf")
        assert channel.set_calls == []

    def test_update_channel_with_several_fields_applies_none_when_one_is_bad(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        resp = client.put("/v1/channel", json={"snr_db": 5, "erasure_prob": 2}, headers=auth)
        assert resp.status_code == 422
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "erasure_prob"]
        assert channel.set_calls == []
        assert channel.settings.snr_db == 10.0

    def test_update_channel_rejected_by_the_emulator_is_422_with_its_message(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        channel.reject = "k_factor only applies to the rician model"
        resp = client.put("/v1/channel", json={"k_factor": 2}, headers=auth)
        assert resp.status_code == 422
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "k_factor"]
        assert "k_factor only applies to the rician model" in error["msg"]
        assert channel.settings.version == 1  # nothing applied

    def test_update_channel_invalid_current_value_names_it(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        channel.settings.model = ""  # an emulator that never had a model set
        resp = client.put("/v1/channel", json={"snr_db": 3}, headers=auth)
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", "model"]
        assert channel.set_calls == []

    def test_update_channel_without_change_sends_nothing(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        resp = client.put("/v1/channel", json={"snr_db": 10}, headers=auth)
        assert resp.status_code == 200
        assert resp.json()["version"] == 1
        assert channel.set_calls == []

    def test_update_channel_unavailable_is_503(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        channel.fail = ServiceError("channel", grpc.StatusCode.UNAVAILABLE, "refused")
        resp = client.put("/v1/channel", json={"snr_db": 3}, headers=auth)
        assert resp.status_code == 503
        assert "unavailable" in resp.json()["detail"]

    def test_update_channel_deadline_is_504(
        self, client: TestClient, channel: FakeChannel, auth: dict[str, str]
    ) -> None:
        channel.fail = ServiceError("channel", grpc.StatusCode.DEADLINE_EXCEEDED, "")
        resp = client.put("/v1/channel", json={"snr_db": 3}, headers=auth)
        assert resp.status_code == 504


class TestChannelAuth:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ],
    )
    def test_update_channel_without_the_token_is_401(
        self, client: TestClient, channel: FakeChannel, headers: dict[str, str]
    ) -> None:
        resp = client.put("/v1/channel", json={"snr_db": 3}, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert channel.set_calls == []

    def test_unauthenticated_invalid_body_is_401_not_422(
        self, client: TestClient, channel: FakeChannel
    ) -> None:
        resp = client.put("/v1/channel", json={"snr_db": 999})
        assert resp.status_code == 401

    def test_token_is_read_from_the_token_file(self, tmp_path: Path, clients: Clients) -> None:
        token_file = tmp_path / "control-token"
        token_file.write_text("from-the-file\n")
        app = create_app(
            Settings(token=None, token_file=token_file),
            registry=CollectorRegistry(),
            clients=clients,
        )
        with TestClient(app) as client:
            ok = client.put(
                "/v1/channel", json={"snr_db": 1}, headers={"Authorization": "Bearer from-the-file"}
            )
            token_file.write_text("rotated\n")
            stale = client.put(
                "/v1/channel", json={"snr_db": 2}, headers={"Authorization": "Bearer from-the-file"}
            )
        assert ok.status_code == 200
        assert stale.status_code == 401

    def test_without_any_token_configured_changes_are_refused(
        self, tmp_path: Path, clients: Clients
    ) -> None:
        app = create_app(
            Settings(token=None, token_file=tmp_path / "missing"),
            registry=CollectorRegistry(),
            clients=clients,
        )
        with TestClient(app) as client:
            resp = client.put(
                "/v1/channel", json={"snr_db": 1}, headers={"Authorization": "Bearer anything"}
            )
            read = client.get("/v1/channel")
        assert resp.status_code == 401
        assert "no API token is configured" in resp.json()["detail"]
        assert read.status_code == 200
