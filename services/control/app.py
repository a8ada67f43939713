"""The control plane's FastAPI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.control.api import api_router
from services.control.api.deps import expected_token
from services.control.api.errors import service_error_handler
from services.control.clients import Clients, GrpcClients, ServiceError
from services.control.metrics import ControlMetrics, MetricsMiddleware
from services.control.settings import Settings
from services.control.state import ControlState

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
REST control plane of the RKD-SC link: the channel emulator's impairments, the
transmitter's length policy, dataset runs, a summary and readiness.

`PUT` and `POST` need `Authorization: Bearer <token>` (`RKDSC_CONTROL_TOKEN`, or the file
`rkdsc up` prints); `GET`s are open. Prometheus metrics are at `/metrics`.
"""


def _version() -> str:
    try:
        return version("rkdsc")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clients: Clients | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        settings: the control plane's settings.
        registry: where the ``rkdsc_control_*`` metrics go (a fresh one if ``None``).
        clients: gRPC clients to use (tests inject fakes); if ``None``, ``grpc.aio``
            channels to the settings' targets are opened at startup and closed at shutdown.
    """
    metrics = ControlMetrics(registry if registry is not None else CollectorRegistry())
    state = ControlState(settings=settings, metrics=metrics, clients=clients)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if state.clients is None:
            owned = state.clients = GrpcClients.connect(settings)
        if expected_token(settings) is None:
            log.warning(
                "no API token (RKDSC_CONTROL_TOKEN unset, %s missing): PUT/POST are refused",
                settings.token_file,
            )
        log.info(
            "control plane: transmitter %s, channel %s, receiver %s",
            settings.transmitter_target,
            settings.channel_target,
            settings.receiver_target,
        )
        try:
            yield
        finally:
            if owned is not None:
                await owned.close()
                state.clients = None

    app = FastAPI(
        title="rkdsc control plane",
        version=_version(),
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.control = state
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(ServiceError, service_error_handler)
    app.include_router(api_router)
    return app
