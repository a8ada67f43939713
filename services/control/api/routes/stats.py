"""``/v1/stats``: one summary of the link for dashboards and humans."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from fastapi import APIRouter

from services.control._convert import channel_public, run_public, transmitter_public
from services.control.api.deps import StateDep
from services.control.api.errors import http_status
from services.control.api.routes.health import service_health
from services.control.clients import ServiceError, TransmitterAPI
from services.control.schemas import StatsPublic
from services.control.state import RunBook

__all__ = ["router"]

router = APIRouter(prefix="/v1/stats", tags=["stats"])

_REFRESH = 20
"""Unfinished runs refreshed per request (the newest); the rest keep their last status. A run
the transmitter answers ``NOT_FOUND`` for is marked failed (lost) and not refreshed again."""


async def _refresh_run(
    book: RunBook, transmitter: TransmitterAPI, run_id: str, errors: dict[str, str]
) -> None:
    """Read ``run_id`` from the transmitter into ``book``. ``NOT_FOUND`` marks it failed
    (lost); another failure (``UNAVAILABLE``, say: the run may well go on) leaves it as it
    was and is explained in ``errors``."""
    try:
        fresh = await transmitter.get_run(run_id)
    except ServiceError as err:
        if err.code == grpc.StatusCode.NOT_FOUND:
            book.lose(run_id)
        else:
            errors[f"run {run_id}"] = f"{err.code.name} ({http_status(err)}): {err.message}"
        return
    book.update(run_public(fresh))


@router.get("", response_model=StatsPublic)
async def read_stats(state: StateDep) -> StatsPublic:
    """Channel settings and version, transmitter policy and version, the runs started here
    with their accuracy, and the health of each service. Parts that cannot be read are
    ``null`` and explained in ``errors``; the summary itself always answers 200. A run the
    transmitter no longer knows (restarted) is reported failed, with the reason in its
    ``error``, not in ``errors``."""
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
    channel_msg, policy_msg, services, *_ = await asyncio.gather(
        part("channel", clients.channel.get_settings()),
        part("transmitter", clients.transmitter.get_policy()),
        service_health(clients),
        *(_refresh_run(state.runs, clients.transmitter, r.run_id, errors) for r in stale),
    )
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
