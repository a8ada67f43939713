"""Control-plane hardening: constant-time token check, body size limit, CORS, no token in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.control import Settings, create_app
from services.control.clients import Clients
from services.control.limits import BodySizeLimitMiddleware

from .conftest import TOKEN

LIMIT = 2048
"""The body limit these tests run with [bytes]."""

ORIGIN = "https://dash.example.org"


def _client(settings: Settings, clients: Clients) -> TestClient:
    return TestClient(create_app(settings, registry=CollectorRegistry(), clients=clients))


@pytest.fixture
def limited(tmp_path: Path, clients: Clients) -> Iterator[TestClient]:
    settings = Settings(token=TOKEN, token_file=tmp_path / "absent", max_body_bytes=LIMIT)
    with _client(settings, clients) as client:
        yield client


@pytest.fixture
def with_cors(tmp_path: Path, clients: Clients) -> Iterator[TestClient]:
    settings = Settings(token=TOKEN, token_file=tmp_path / "absent", cors_origins=[ORIGIN])
    with _client(settings, clients) as client:
        yield client


def _padded_body(size: int) -> bytes:
    """A JSON channel update of exactly ``size`` bytes (an unknown field pads it)."""
    head = b'{"snr_db": 5.0, "pad": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


class TestBearerToken:
    def test_compare_is_constant_time_on_bytes(
        self, client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[Any, Any]] = []
        real = secrets.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return bool(real(a, b))

        monkeypatch.setattr(secrets, "compare_digest", spy)  # what deps calls
        resp = client.put(
            "/v1/channel", json={"snr_db": 5.0}, headers={"Authorization": "Bearer wrong"}
        )
        assert resp.status_code == 401
        assert calls == [(b"wrong", TOKEN.encode())]

    def test_non_ascii_token_is_refused_not_an_error(self, client: TestClient) -> None:
        resp = client.put(
            "/v1/channel",
            json={"snr_db": 5.0},
            headers={"Authorization": "Bearer t\u00f6ken".encode()},
        )
        assert resp.status_code == 401
        assert resp.json() == {"detail": "invalid bearer token"}


class TestBodySizeLimit:
    def test_body_at_the_limit_is_accepted(self, limited: TestClient, auth: dict[str, str]) -> None:
        resp = limited.put(
            "/v1/channel",
            content=_padded_body(LIMIT),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status_code != 413
        assert resp.status_code == 422  # read, then refused for the unknown field

    def test_oversized_body_is_413(self, limited: TestClient, auth: dict[str, str]) -> None:
        resp = limited.put(
            "/v1/channel",
            content=_padded_body(LIMIT + 1),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status_code == 413
        assert resp.headers["content-type"] == "application/json"
        detail = resp.json()["detail"]
        assert f"larger than {LIMIT} bytes" in detail
        assert "RKDSC_CONTROL_MAX_BODY_BYTES" in detail

    def test_oversized_body_is_413_before_authentication(self, limited: TestClient) -> None:
        resp = limited.post("/v1/runs", content=b"x" * (LIMIT + 1))
        assert resp.status_code == 413

    def test_chunked_oversized_body_is_413(self, limited: TestClient, auth: dict[str, str]) -> None:
        body = _padded_body(4 * LIMIT)

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 512):
                yield body[i : i + 512]

        resp = limited.put(
            "/v1/channel",
            content=chunks(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status_code == 413
        assert f"larger than {LIMIT} bytes" in resp.json()["detail"]

    def test_chunked_small_body_is_accepted(
        self, limited: TestClient, auth: dict[str, str]
    ) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"snr_db": '
            yield b"5.0}"

        resp = limited.put(
            "/v1/channel",
            content=chunks(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status_code == 200
        assert resp.json()["snr_db"] == 5.0

    def test_invalid_content_length_is_400(self) -> None:
        sent: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("the app must not see the request")

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": "/v1/channel",
            "raw_path": b"/v1/channel",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-length", b"12abc")],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        asyncio.run(BodySizeLimitMiddleware(app, max_bytes=LIMIT)(scope, receive, send))
        assert sent[0]["status"] == 400
        assert json.loads(sent[1]["body"]) == {"detail": "invalid Content-Length header"}

    def test_default_limit_is_64_kib(self) -> None:
        assert Settings.model_fields["max_body_bytes"].default == 64 * 1024

    def test_limit_below_1_kib_is_rejected(self) -> None:
        with pytest.raises(ValidationError, match="max_body_bytes"):
            Settings(max_body_bytes=10)

    def test_413_is_counted(self, tmp_path: Path, clients: Clients) -> None:
        registry = CollectorRegistry()
        settings = Settings(token=TOKEN, token_file=tmp_path / "absent", max_body_bytes=LIMIT)
        app = create_app(settings, registry=registry, clients=clients)
        with TestClient(app) as client:
            assert client.post("/v1/runs", content=b"x" * (LIMIT + 1)).status_code == 413
        labels = {"method": "POST", "route": "<unmatched>", "status": "413"}
        assert registry.get_sample_value("rkdsc_control_http_requests_total", labels) == 1.0


class TestCors:
    def test_no_cors_headers_by_default(self, client: TestClient) -> None:
        resp = client.get("/v1/channel", headers={"Origin": ORIGIN})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers

    def test_no_preflight_by_default(self, client: TestClient) -> None:
        resp = client.options(
            "/v1/channel",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"},
        )
        assert "access-control-allow-origin" not in resp.headers
        assert resp.status_code == 405

    def test_listed_origin_is_allowed(self, with_cors: TestClient) -> None:
        resp = with_cors.options(
            "/v1/channel",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in resp.headers
        get = with_cors.get("/v1/channel", headers={"Origin": ORIGIN})
        assert get.headers["access-control-allow-origin"] == ORIGIN

    def test_other_origin_is_not_allowed(self, with_cors: TestClient) -> None:
        resp = with_cors.get("/v1/channel", headers={"Origin": "https://evil.example.com"})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers

    @pytest.mark.parametrize(
        "origin", ["*", "dash.example.org", "https://dash.example.org/path", "ftp://x.org"]
    )
    def test_origin_must_be_explicit(self, origin: str) -> None:
        with pytest.raises(ValidationError, match="cors_origins"):
            Settings(cors_origins=[origin])

    def test_origins_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RKDSC_CONTROL_CORS_ORIGINS", json.dumps([ORIGIN, "http://[::1]:3000"]))
        assert Settings().cors_origins == [ORIGIN, "http://[::1]:3000"]


class TestTokenNotLogged:
    @pytest.mark.parametrize("token", [TOKEN, "wrong-token-9876543210"])
    def test_token_never_in_logs(
        self, client: TestClient, caplog: pytest.LogCaptureFixture, token: str
    ) -> None:
        caplog.set_level(logging.DEBUG)
        headers = {"Authorization": f"Bearer {token}"}
        client.put("/v1/channel", json={"snr_db": 5.0}, headers=headers)
        client.put("/v1/channel", json={"snr_db": 500.0}, headers=headers)  # 422
        client.post("/v1/runs", json={}, headers=headers)
        assert caplog.records, "expected some log output to check"
        assert token not in caplog.text
        for record in caplog.records:
            assert token not in str(record.args)

    def test_token_not_in_startup_logs(
        self, tmp_path: Path, clients: Clients, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        settings = Settings(token=TOKEN, token_file=tmp_path / "absent")
        with TestClient(create_app(settings, registry=CollectorRegistry(), clients=clients)):
            pass
        assert TOKEN not in caplog.text
        assert TOKEN not in repr(settings)
