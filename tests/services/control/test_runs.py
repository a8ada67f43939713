"""/v1/runs: start a run (201) and follow it (404 for an unknown run)."""

from __future__ import annotations

import grpc
from fastapi.testclient import TestClient

from services.control._convert import run_public
from services.control.clients import ServiceError
from services.control.state import LOST_REASON
from services.pb import services_pb2

from .fakes import FakeTransmitter


class TestRuns:
    def test_create_run_is_201_with_location(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        resp = client.post("/v1/runs", json={"num_images": 20, "rate": 5}, headers=auth)
        assert resp.status_code == 201
        body = resp.json()
        assert body["run_id"] == "run-1"
        assert body["state"] == "running" and body["done"] is False
        assert body["total"] == 20 and body["progress"] == 0.0
        assert resp.headers["Location"] == "/v1/runs/run-1"
        (request,) = transmitter.run_requests
        assert (request.split, request.num_images, request.rate) == ("test", 20, 5.0)

    def test_read_run_reports_progress_accuracy_and_fates(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 11}, headers=auth)
        resp = client.get("/v1/runs/run-1")
        assert resp.status_code == 200
        body = resp.json()
        assert body["done"] is True and body["progress"] == 1.0
        assert body["fates"] == {"predicted": 10, "lost": 1, "error": 0, "error_codes": {}}
        assert body["accuracy"] == 0.9
        assert body["per_snr"] == [{"snr_db": 10.0, "predicted": 10, "correct": 9, "accuracy": 0.9}]
        assert body["mean_end_to_end_seconds"] == 0.012

    def test_read_run_not_found_is_404(self, client: TestClient) -> None:
        resp = client.get("/v1/runs/nope")
        assert resp.status_code == 404
        assert "nope" in resp.json()["detail"]

    def test_create_run_invalid_is_422_and_sends_nothing(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        body = {"split": "val", "num_images": 0, "rate": 1e39}  # rate: inf as a float32
        resp = client.post("/v1/runs", json=body, headers=auth)
        assert resp.status_code == 422
        fields = {e["loc"][-1] for e in resp.json()["detail"]}
        assert fields == {"split", "num_images", "rate"}
        assert transmitter.run_requests == []

    def test_create_run_without_the_token_is_401(
        self, client: TestClient, transmitter: FakeTransmitter
    ) -> None:
        resp = client.post("/v1/runs", json={"num_images": 5})
        assert resp.status_code == 401
        assert transmitter.run_requests == []

    def test_list_runs_shows_the_runs_started_here(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 3}, headers=auth)
        client.post("/v1/runs", json={"num_images": 4}, headers=auth)
        resp = client.get("/v1/runs")
        assert [r["run_id"] for r in resp.json()] == ["run-1", "run-2"]


class TestLostRuns:
    """A run the transmitter forgot (restart, scale-down) ends failed instead of running on."""

    def test_read_run_lost_by_a_transmitter_restart_is_failed(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 5}, headers=auth)
        transmitter.restart()
        resp = client.get("/v1/runs/run-1")
        assert resp.status_code == 200
        body = resp.json()
        assert body["state"] == "failed" and body["done"] is True
        assert body["error"] == LOST_REASON and body["error"].startswith("lost: ")
        assert body["total"] == 5
        assert client.get("/v1/runs").json() == [body]

    def test_a_lost_run_is_not_asked_for_again(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 5}, headers=auth)
        transmitter.restart()
        first = client.get("/v1/runs/run-1").json()
        second = client.get("/v1/runs/run-1")
        assert second.status_code == 200 and second.json() == first
        client.get("/v1/stats")
        assert transmitter.get_run_calls == ["run-1"]

    def test_read_run_with_the_transmitter_unavailable_is_503_and_keeps_the_run(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 5}, headers=auth)
        transmitter.fail = ServiceError("transmitter", grpc.StatusCode.UNAVAILABLE, "refused")
        resp = client.get("/v1/runs/run-1")
        assert resp.status_code == 503
        (run,) = client.get("/v1/runs").json()
        assert run["state"] == "running" and run["done"] is False and run["error"] is None
        transmitter.fail = None
        assert client.get("/v1/runs/run-1").json()["state"] == "done"

    def test_a_finished_run_stays_done_after_a_transmitter_restart(
        self, client: TestClient, transmitter: FakeTransmitter, auth: dict[str, str]
    ) -> None:
        client.post("/v1/runs", json={"num_images": 11}, headers=auth)
        done = client.get("/v1/runs/run-1").json()
        transmitter.restart()
        resp = client.get("/v1/runs/run-1")
        assert resp.status_code == 200 and resp.json() == done
        assert done["state"] == "done" and done["error"] is None


def test_errors_by_code_reach_the_rest_api() -> None:

    status = services_pb2.RunStatus(
        run_id="r",
        state="done",
        total=5,
        sent=5,
        predicted=2,
        lost=0,
        errors=3,
        errors_by_code={"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1},
    )
    fates = run_public(status).fates
    assert (fates.error, fates.error_codes) == (3, {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1})
