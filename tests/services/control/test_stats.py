"""/v1/stats: one summary that answers even when a part cannot be read."""

from __future__ import annotations

import grpc
from fastapi.testclient import TestClient

from services.control.clients import ServiceError

from .fakes import FakeChannel, FakeHealth


class TestStats:
    def test_stats_summarises_settings_policy_runs_and_health(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 11}, headers=auth)
        resp = client.get("/v1/stats")
        assert resp.status_code == 200
        body = resp.json()
        assert body["channel"]["snr_db"] == 10.0 and body["channel"]["version"] == 1
        assert body["transmitter"]["length_policy"] == "fixed"
        assert body["transmitter"]["version"] == 3
        (run,) = body["runs"]
        assert run["run_id"] == "run-1" and run["done"] is True and run["accuracy"] == 0.9
        assert body["services"] == {
            "transmitter": "SERVING",
            "channel": "SERVING",
            "receiver": "SERVING",
        }
        assert body["errors"] == {}

    def test_stats_with_the_channel_down_reports_it(
        self, client: TestClient, channel: FakeChannel, health: dict[str, FakeHealth]
    ) -> None:
        down = ServiceError("channel", grpc.StatusCode.UNAVAILABLE, "refused")
        channel.fail = down
        health["channel"].fail = down
        resp = client.get("/v1/stats")
        assert resp.status_code == 200
        body = resp.json()
        assert body["channel"] is None
        assert body["transmitter"] is not None
        assert body["services"]["channel"] == "UNAVAILABLE"
        assert "UNAVAILABLE" in body["errors"]["channel"]
