"""/v1/stats: one summary that answers even when a part cannot be read."""

from __future__ import annotations

import grpc
from fastapi.testclient import TestClient

from services.control.clients import ServiceError
from services.control.state import LOST_REASON

from .fakes import FakeChannel, FakeHealth, FakeTransmitter


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

    def test_stats_marks_a_run_the_transmitter_lost_failed_and_stops_asking(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 5}, headers=auth)
        transmitter.restart()
        first = client.get("/v1/stats").json()
        second = client.get("/v1/stats").json()
        for body in (first, second):
            assert body["errors"] == {}
            (run,) = body["runs"]
            assert run["run_id"] == "run-1" and run["state"] == "failed" and run["done"] is True
            assert run["error"] == LOST_REASON
        assert transmitter.get_run_calls == ["run-1"]
        (listed,) = client.get("/v1/runs").json()
        assert listed["state"] == "failed" and listed["error"] == LOST_REASON

    def test_stats_with_the_transmitter_unavailable_keeps_its_runs_running(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 11}, headers=auth)
        transmitter.fail = ServiceError("transmitter", grpc.StatusCode.UNAVAILABLE, "refused")
        body = client.get("/v1/stats").json()
        assert "UNAVAILABLE" in body["errors"]["run run-1"]
        (run,) = body["runs"]
        assert run["state"] == "running" and run["done"] is False and run["error"] is None
        transmitter.fail = None
        body = client.get("/v1/stats").json()
        assert body["errors"] == {}
        (run,) = body["runs"]
        assert run["state"] == "done" and run["accuracy"] == 0.9
