"""``/v1/runs``: stream a dataset split through the link and follow its progress."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, HTTPException, Path, Response, status

from services.control._convert import run_public
from services.control.api.deps import (
    MetricsDep,
    RequireToken,
    StateDep,
    TokenFirstRoute,
    TransmitterDep,
)
from services.control.api.errors import rejected
from services.control.clients import ServiceError
from services.control.schemas import RunCreate, RunPublic
from services.pb import services_pb2

__all__ = ["router"]

router = APIRouter(prefix="/v1/runs", tags=["runs"], route_class=TokenFirstRoute)

_FIELDS = {
    "split": ("split",),
    "num_images": ("num_images", "images"),
    "rate": ("rate",),
    "link_id": ("link_id", "link"),
}
RunId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")


@router.post(
    "",
    response_model=RunPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[RequireToken],
    responses={
        400: {"description": "a request the server cannot parse (non-JSON bodies are 422)"},
        401: {"description": "missing or wrong bearer token"},
        422: {"description": "an invalid request, or a body that is not JSON; names the field"},
        503: {"description": "the transmitter is unavailable"},
    },
)
async def create_run(
    run: RunCreate,
    response: Response,
    transmitter: TransmitterDep,
    state: StateDep,
    metrics: MetricsDep,
) -> RunPublic:
    """Start a run: the transmitter streams ``num_images`` of ``split`` at ``rate``."""
    request = services_pb2.RunRequest(
        split=run.split, num_images=run.num_images, rate=run.rate, link_id=run.link_id
    )
    try:
        started = run_public(await transmitter.start_run(request))
    except ServiceError as err:
        if err.code == grpc.StatusCode.INVALID_ARGUMENT:
            raise rejected(err, _FIELDS, run.model_fields_set) from err
        raise
    state.runs.record(started)
    metrics.runs_started.inc()
    response.headers["Location"] = f"{router.prefix}/{started.run_id}"
    return started


@router.get("", response_model=list[RunPublic])
async def list_runs(state: StateDep) -> list[RunPublic]:
    """The runs started through this control plane (last known status, newest last)."""
    return state.runs.all()


@router.get(
    "/{run_id}",
    response_model=RunPublic,
    responses={
        404: {"description": "no such run"},
        503: {"description": "the transmitter is unavailable"},
    },
)
async def read_run(transmitter: TransmitterDep, state: StateDep, run_id: str = RunId) -> RunPublic:
    """A run's progress, accuracy (overall and per 2 dB SNR bin) and frame fates.

    A run started here that has finished is answered from the control plane's record (its
    final status). One the transmitter no longer knows (it restarted) is answered ``failed``,
    with ``error`` saying it was lost, and is not asked for again; 404 is for a run neither
    knows.
    """
    known = state.runs.get(run_id)
    if known is not None and known.done:
        return known
    try:
        run = run_public(await transmitter.get_run(run_id))
    except ServiceError as err:
        if err.code == grpc.StatusCode.NOT_FOUND:
            lost = state.runs.lose(run_id)
            if lost is not None:
                return lost
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"run {run_id!r} not found on the transmitter"
            ) from err
        raise
    state.runs.update(run)
    return run
