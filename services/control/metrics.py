"""The control plane's Prometheus metrics and the ASGI middleware that records requests."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services._metrics import LATENCY_BUCKETS

__all__ = ["ControlMetrics", "MetricsMiddleware"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of requests that matched no route (keeps the label set bounded)."""


class ControlMetrics:
    """``rkdsc_control_*`` metrics on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rkdsc_control_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "rkdsc_control_http_request_seconds",
            "HTTP request handling time [s], by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.config_changes = Counter(
            "rkdsc_control_config_changes",
            "Configuration changes applied through the control plane, by resource.",
            ["resource"],
            registry=registry,
        )
        self.channel_snr_db = Gauge(
            "rkdsc_control_channel_snr_db",
            "The channel emulator's SNR, Es/N0 [dB], as last read or set (NaN until known).",
            registry=registry,
        )
        self.channel_snr_db.set(float("nan"))
        self.config_restores = Counter(
            "rkdsc_control_config_restores",
            "Stored configurations applied again to a service that had restarted, by resource.",
            ["resource"],
            registry=registry,
        )
        self.config_restores_rejected = Counter(
            "rkdsc_control_config_restores_rejected",
            "Stored configurations a restarted service refused (or that could not be read), "
            "discarded, by resource.",
            ["resource"],
            registry=registry,
        )
        self.runs_started = Counter(
            "rkdsc_control_runs_started",
            "Runs started through the control plane.",
            registry=registry,
        )


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: ControlMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "OTHER"
            route = _route_template(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
