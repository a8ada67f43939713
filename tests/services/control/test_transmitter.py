"""/v1/transmitter: the length policy, read openly and updated partially with the token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.pb import services_pb2

from .fakes import FakeTransmitter


class TestTransmitterPolicy:
    def test_read_transmitter_is_open(self, client: TestClient) -> None:
        resp = client.get("/v1/transmitter")
        assert resp.status_code == 200
        assert resp.json() == {
            "length_policy": "fixed",
            "fixed_length": 64,
            "target_accuracy": 0.8,
            "confidence": 0.95,
            "version": 3,
        }

    def test_update_transmitter_merges_partial_update(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        resp = client.put(
            "/v1/transmitter",
            json={"length_policy": "adaptive", "target_accuracy": 0.9},
            headers=auth,
        )
        assert resp.status_code == 200
        assert resp.json() == {
            "length_policy": "adaptive",
            "fixed_length": 64,
            "target_accuracy": 0.9,
            "confidence": 0.95,
            "version": 4,
        }
        (sent,) = transmitter.set_calls
        assert sent.mode == services_pb2.LengthPolicy.MODE_ADAPTIVE
        assert sent.fixed_length == 64

    def test_update_transmitter_confidence(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        resp = client.put("/v1/transmitter", json={"confidence": 0.5}, headers=auth)
        assert resp.status_code == 200
        assert (resp.json()["confidence"], resp.json()["version"]) == (0.5, 4)
        (sent,) = transmitter.set_calls
        assert sent.HasField("confidence") and sent.confidence == 0.5
        assert sent.target_accuracy == pytest.approx(0.8)
        assert client.get("/v1/transmitter").json()["confidence"] == 0.5

    def test_update_transmitter_length_not_allowed_is_422_naming_fixed_length(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        resp = client.put("/v1/transmitter", json={"fixed_length": 7}, headers=auth)
        assert resp.status_code == 422
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "fixed_length"]
        assert "L=7" in error["msg"]
        assert transmitter.policy.fixed_length == 64

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("fixed_length", 0),
            ("fixed_length", 2.5),
            ("target_accuracy", 1.5),
            ("confidence", 0.3),
            ("confidence", 1.0),
            ("confidence", 0.99999999),  # 1.0 as a float32
            ("length_policy", "greedy"),
        ],
    )
    def test_update_transmitter_invalid_value_is_422_naming_the_field(
        self,
        client: TestClient,
        transmitter: FakeTransmitter,
        auth: dict[str, str],
        field: str,
        value: object,
    ) -> None:
        resp = client.put("/v1/transmitter", json={field: value}, headers=auth)
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"][-1] == field
        assert transmitter.set_calls == []

    def test_update_transmitter_without_the_token_is_401(
        self, client: TestClient, transmitter: FakeTransmitter
    ) -> None:
        resp = client.put("/v1/transmitter", json={"fixed_length": 32})
        assert resp.status_code == 401
        assert transmitter.set_calls == []
