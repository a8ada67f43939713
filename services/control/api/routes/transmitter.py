"""``/v1/transmitter``: read and partially update the transmitter's length policy."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, HTTPException, status

from services.control._convert import policy_message, transmitter_public
from services.control.api.deps import (
    MetricsDep,
    RequireToken,
    StateDep,
    TokenFirstRoute,
    TransmitterDep,
)
from services.control.api.errors import rejected, validation_error
from services.control.clients import ServiceError
from services.control.persist import remember, restore_locked
from services.control.schemas import TransmitterPublic, TransmitterUpdate

__all__ = ["router"]

router = APIRouter(prefix="/v1/transmitter", tags=["transmitter"], route_class=TokenFirstRoute)

_FIELDS = {
    "fixed_length": ("fixed_length", "L", "length"),
    "target_accuracy": ("target_accuracy", "accuracy"),
    "length_policy": ("length_policy", "mode", "policy"),
    "confidence": ("confidence",),
}
_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "a request the server cannot parse (a body that is not JSON is a 422)"},
    401: {"description": "missing or wrong bearer token"},
    422: {
        "description": "an invalid value (e.g. an L the codec cannot send), or a body that is "
        "not JSON; names the field"
    },
    503: {"description": "the transmitter is unavailable"},
}


@router.get("", response_model=TransmitterPublic, responses={503: _ERRORS[503]})
async def read_transmitter(transmitter: TransmitterDep) -> TransmitterPublic:
    """The transmitter's length policy."""
    return transmitter_public(await transmitter.get_policy())


@router.put("", response_model=TransmitterPublic, dependencies=[RequireToken], responses=_ERRORS)
async def update_transmitter(
    update: TransmitterUpdate, transmitter: TransmitterDep, state: StateDep, metrics: MetricsDep
) -> TransmitterPublic:
    """Change the length policy; fields left out keep their values."""
    changes = update.model_dump(exclude_unset=True)
    async with state.policy_lock:
        await restore_locked(state, "transmitter")  # a restarted transmitter's policy first
        current = transmitter_public(await transmitter.get_policy())
        merged = {**current.model_dump(exclude={"version"}), **changes}
        if merged["length_policy"] not in ("fixed", "adaptive"):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    validation_error(
                        "length_policy",
                        "the transmitter reports no policy mode: set length_policy to "
                        "'fixed' or 'adaptive'",
                        "missing",
                    )
                ],
            )
        if merged == current.model_dump(exclude={"version"}):
            return current
        try:
            applied = transmitter_public(await transmitter.set_policy(policy_message(merged)))
        except ServiceError as err:
            if err.code == grpc.StatusCode.INVALID_ARGUMENT:
                raise rejected(err, _FIELDS, changes) from err
            raise
        await remember(state, "transmitter", merged, applied.version)
    metrics.config_changes.labels("transmitter").inc()
    return applied
