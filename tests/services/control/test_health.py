"""/healthz, /readyz, /metrics and the OpenAPI documents."""

from __future__ import annotations

import grpc
from fastapi.testclient import TestClient

from services.control.clients import ServiceError

from .fakes import FakeHealth


class TestHealth:
    def test_healthz_answers_while_services_are_down(
        self, client: TestClient, health: dict[str, FakeHealth]
    ) -> None:
        health["channel"].fail = ServiceError("channel", grpc.StatusCode.UNAVAILABLE, "down")
        resp = client.get("/healthz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok"}

    def test_readyz_is_200_when_all_services_serve(self, client: TestClient) -> None:
        resp = client.get("/readyz")
        assert resp.status_code == 200
        assert resp.json() == {
            "status": "ready",
            "services": {"transmitter": "SERVING", "channel": "SERVING", "receiver": "SERVING"},
            "not_ready": [],
        }

    def test_readyz_is_503_listing_the_services_not_serving(
        self, client: TestClient, health: dict[str, FakeHealth]
    ) -> None:
        health["receiver"].status = "NOT_SERVING"
        health["channel"].fail = ServiceError("channel", grpc.StatusCode.UNAVAILABLE, "down")
        resp = client.get("/readyz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "not ready"
        assert body["not_ready"] == ["channel", "receiver"]
        assert body["services"]["channel"] == "UNAVAILABLE"
        assert body["services"]["receiver"] == "NOT_SERVING"


class TestMetrics:
    def test_metrics_expose_request_and_change_counters(
        self, client: TestClient, auth: dict[str, str]
    ) -> None:
        client.get("/v1/channel")
        client.put("/v1/channel", json={"snr_db": 12.5}, headers=auth)
        client.put("/v1/channel", json={"snr_db": 12.5})  # 401
        client.get("/v1/runs/unknown")  # 404
        text = client.get("/metrics").text
        assert (
            'rkdsc_control_http_requests_total{method="GET",route="/v1/channel",status="200"} 1.0'
            in text
        )
        assert (
            'rkdsc_control_http_requests_total{method="PUT",route="/v1/channel",status="401"} 1.0'
            in text
        )
        assert 'route="/v1/runs/{run_id}",status="404"' in text
        assert 'rkdsc_control_http_request_seconds_bucket{le="0.005",method="GET"' in text
        assert 'rkdsc_control_config_changes_total{resource="channel"} 1.0' in text
        assert "rkdsc_control_channel_snr_db 12.5" in text

    def test_metrics_do_not_label_unmatched_paths(self, client: TestClient) -> None:
        client.get("/no/such/path/123")
        text = client.get("/metrics").text
        assert "/no/such/path" not in text
        assert 'route="<unmatched>",status="404"' in text

    def test_channel_snr_gauge_is_nan_until_known(self, client: TestClient) -> None:
        assert "rkdsc_control_channel_snr_db NaN" in client.get("/metrics").text


class TestOpenAPI:
    def test_openapi_lists_the_routes(self, client: TestClient) -> None:
        doc = client.get("/openapi.json").json()
        paths = doc["paths"]
        assert set(paths["/v1/channel"]) == {"get", "put"}
        assert set(paths["/v1/transmitter"]) == {"get", "put"}
        assert set(paths["/v1/runs"]) == {"get", "post"}
        assert "get" in paths["/v1/runs/{run_id}"]
        assert {"/v1/stats", "/healthz", "/readyz"} <= set(paths)
        assert "bearer" in str(doc["components"]["securitySchemes"]).lower()
        assert paths["/v1/channel"]["put"]["security"]
        assert "security" not in paths["/v1/channel"]["get"]

    def test_docs_page_is_served(self, client: TestClient) -> None:
        resp = client.get("/docs")
        assert resp.status_code == 200
        assert "swagger" in resp.text.lower()
