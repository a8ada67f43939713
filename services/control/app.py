"""The control plane's FastAPI app factory."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from services.control.api import api_router
from services.control.api.deps import expected_token
from services.control.api.errors import request_validation_handler, service_error_handler
from services.control.clients import Clients, GrpcClients, ServiceError
from services.control.limits import BodySizeLimitMiddleware
from services.control.metrics import ControlMetrics, MetricsMiddleware
from services.control.persist import ConfigStore, restore_loop
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
    if settings.state_file is not None:
        try:
            state.store = ConfigStore(settings.state_file)
        except (sqlite3.Error, OSError) as err:
            raise ValueError(
                f"RKDSC_CONTROL_STATE_FILE={settings.state_file} cannot be used: {err}"
            ) from err

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
            "control plane: transmitter %s, channel %s, receiver %s (%s)",
            settings.transmitter_target,
            settings.channel_target,
            settings.receiver_target,
            settings.tls.describe(),
        )
        restorer = None
        if state.store is not None:
            log.info("configuration kept in %s", state.store.path)
            restorer = asyncio.create_task(restore_loop(state, settings.restore_seconds))
        try:
            yield
        finally:
            if restorer is not None:
                restorer.cancel()
                await asyncio.gather(restorer, return_exceptions=True)
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
    # The last added runs first: CORS (when on) answers preflights, metrics count the rest.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:  # none by default: browsers get no cross-origin access
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "PUT", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.include_router(api_router)
    return app
