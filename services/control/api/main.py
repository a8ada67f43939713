"""All routers of the REST API, in one router for the app factory."""

from __future__ import annotations

from fastapi import APIRouter

from services.control.api.routes import channel, health, runs, stats, transmitter

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(channel.router)
api_router.include_router(transmitter.router)
api_router.include_router(runs.router)
api_router.include_router(stats.router)
api_router.include_router(health.router)
