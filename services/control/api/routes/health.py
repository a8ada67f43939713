"""Operations: ``/healthz`` (process alive), ``/readyz`` (all services SERVING), ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.control.api.deps import MetricsDep, StateDep
from services.control.clients import SERVICE_NAMES, Clients, ServiceError
from services.control.schemas import Readiness

__all__ = ["router", "service_health"]

router = APIRouter(tags=["health"])


async def service_health(clients: Clients | None) -> dict[str, str]:
    """The health status of each gRPC service; ``UNAVAILABLE``/... when the check failed."""
    if clients is None:
        return dict.fromkeys(SERVICE_NAMES, "UNKNOWN")

    async def one(name: str) -> str:
        try:
            return str(await clients.health[name].check())
        except ServiceError as err:
            return str(err.code.name)

    answers = await asyncio.gather(*(one(name) for name in SERVICE_NAMES))
    return dict(zip(SERVICE_NAMES, answers, strict=True))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The control-plane process is alive (says nothing about the gRPC services)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "some service is not SERVING"}},
)
async def readyz(state: StateDep) -> Response | Readiness:
    """200 when all three gRPC services answer the standard health check SERVING, else 503
    listing those that do not."""
    services = await service_health(state.clients)
    not_ready = [name for name, s in services.items() if s != "SERVING"]
    body = Readiness(
        status="not ready" if not_ready else "ready", services=services, not_ready=not_ready
    )
    if not_ready:
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return body


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format of this app's registry."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
