"""``/v1/stats``: one summary of the link for dashboards and humans."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from services.control._convert import channel_public, run_public, transmitter_public
from services.control.api.deps import StateDep
from services.control.api.errors import http_status
from services.control.api.routes.health import service_health
from services.control.clients import ServiceError
from services.control.schemas import StatsPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/stats", tags=["stats"])

_REFRESH = 20
"""Unfinished runs refreshed per request (the newest); the rest keep their last status."""


@router.get("", response_model=StatsPublic)
async def read_stats(state: StateDep) -> StatsPublic:
    """Channel settings and version, transmitter policy and version, the runs started here
    with their accuracy, and the health of each service. Parts that cannot be read are
    ``null`` and explained in ``errors``; the summary itself always answers 200."""
    errors: dict[str, str] = {}
    clients = state.clients

    async def part(name: str, call: Any) -> Any:
        try:
            return await call
        except ServiceError as err:
            errors[name] = f"{err.code.name} ({http_status(err)}): {err.message}"
            return None

    runs = state.runs.all()
    stale = [r for r in runs if not r.done][-_REFRESH:]
    if clients is None:
        services = await service_health(None)
        return StatsPublic(channel=None, transmitter=None, runs=runs, services=services, errors={})
    channel_msg, policy_msg, services, *fresh = await asyncio.gather(
        part("channel", clients.channel.get_settings()),
        part("transmitter", clients.transmitter.get_policy()),
        service_health(clients),
        *(part(f"run {r.run_id}", clients.transmitter.get_run(r.run_id)) for r in stale),
    )
    for msg in fresh:
        if msg is not None:
            state.runs.update(run_public(msg))
    channel = channel_public(channel_msg) if channel_msg is not None else None
    if channel is not None:
        state.metrics.channel_snr_db.set(channel.snr_db)
    return StatsPublic(
        channel=channel,
        transmitter=transmitter_public(policy_msg) if policy_msg is not None else None,
        runs=state.runs.all(),
        services=services,
        errors=errors,
    )
