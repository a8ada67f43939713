"""``/v1/channel``: read and partially update the channel emulator's settings."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, HTTPException, status
from pydantic import ValidationError

from services.control._convert import channel_public, channel_settings_message
from services.control.api.deps import (
    ChannelDep,
    MetricsDep,
    RequireToken,
    StateDep,
    TokenFirstRoute,
)
from services.control.api.errors import rejected, validation_error
from services.control.clients import ServiceError
from services.control.persist import remember, restore_locked
from services.control.schemas import ChannelConfig, ChannelPublic, ChannelUpdate

__all__ = ["router"]

router = APIRouter(prefix="/v1/channel", tags=["channel"], route_class=TokenFirstRoute)

_FIELDS = {name: (name,) for name in ChannelConfig.model_fields}
_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "a request the server cannot parse (a body that is not JSON is a 422)"},
    401: {"description": "missing or wrong bearer token"},
    422: {"description": "an invalid value, or a body that is not JSON; names the field"},
    503: {"description": "the channel emulator is unavailable"},
}


@router.get("", response_model=ChannelPublic, responses={503: _ERRORS[503]})
async def read_channel(channel: ChannelDep, metrics: MetricsDep) -> ChannelPublic:
    """The channel emulator's current settings."""
    current = channel_public(await channel.get_settings())
    metrics.channel_snr_db.set(current.snr_db)
    return current


@router.put("", response_model=ChannelPublic, dependencies=[RequireToken], responses=_ERRORS)
async def update_channel(
    update: ChannelUpdate, channel: ChannelDep, state: StateDep, metrics: MetricsDep
) -> ChannelPublic:
    """Change some settings; the rest keep their values. Validated as a whole, then applied
    at once (nothing is half-applied)."""
    changes = update.model_dump(exclude_unset=True)
    async with state.channel_lock:
        await restore_locked(state, "channel")  # a restarted emulator gets its config back first
        current = channel_public(await channel.get_settings())
        merged = {**current.model_dump(exclude={"version"}), **changes}
        try:
            config = ChannelConfig.model_validate(merged)
        except ValidationError as err:
            # The update's own fields were validated already: what fails is a current value.
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[_current_value_error(e["loc"], e["msg"], merged) for e in err.errors()],
            ) from err
        if config.model_dump() == current.model_dump(exclude={"version"}):
            return current
        try:
            applied = channel_public(await channel.set_settings(channel_settings_message(config)))
        except ServiceError as err:
            if err.code == grpc.StatusCode.INVALID_ARGUMENT:
                raise rejected(err, _FIELDS, changes) from err
            raise
        await remember(state, "channel", config.model_dump(), applied.version)
    metrics.config_changes.labels("channel").inc()
    metrics.channel_snr_db.set(applied.snr_db)
    return applied


def _current_value_error(
    loc: tuple[int | str, ...], msg: str, merged: dict[str, object]
) -> dict[str, object]:
    field = str(loc[0]) if loc else None
    value = merged.get(field) if field is not None else None
    return validation_error(
        field,
        f"{field}: {msg} (the channel emulator reports {field}={value!r}; set {field} in this "
        "update)",
    )
