"""Dependencies of the routes, as ``Annotated`` aliases: state, settings, clients, auth."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.control.clients import ChannelAPI, Clients, TransmitterAPI
from services.control.metrics import ControlMetrics
from services.control.settings import Settings
from services.control.state import ControlState

__all__ = [
    "ChannelDep",
    "ClientsDep",
    "MetricsDep",
    "RequireToken",
    "SettingsDep",
    "StateDep",
    "TokenFirstRoute",
    "TransmitterDep",
    "expected_token",
]

log = logging.getLogger(__name__)


def get_state(request: Request) -> ControlState:
    state: ControlState = request.app.state.control
    return state


StateDep = Annotated[ControlState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_metrics(state: StateDep) -> ControlMetrics:
    return state.metrics


MetricsDep = Annotated[ControlMetrics, Depends(get_metrics)]


def get_clients(state: StateDep) -> Clients:
    if state.clients is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the control plane has no gRPC clients yet"
        )
    return state.clients


ClientsDep = Annotated[Clients, Depends(get_clients)]


def get_transmitter(clients: ClientsDep) -> TransmitterAPI:
    return clients.transmitter


def get_channel(clients: ClientsDep) -> ChannelAPI:
    return clients.channel


TransmitterDep = Annotated[TransmitterAPI, Depends(get_transmitter)]
ChannelDep = Annotated[ChannelAPI, Depends(get_channel)]


def expected_token(settings: Settings) -> str | None:
    """The bearer token: ``settings.token`` when set, else the whole of ``token_file``, its
    surrounding whitespace stripped."""
    if settings.token is not None:
        return settings.token.get_secret_value()
    if settings.token_file is None:
        return None
    try:
        token = settings.token_file.read_text().strip()
    except OSError:
        return None
    return token or None


_bearer = HTTPBearer(
    auto_error=False,
    description="RKDSC_CONTROL_TOKEN, or the token `rkdsc up` wrote (it prints the file).",
)


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless ``Authorization: Bearer <token>`` carries the configured token."""
    challenge = {"WWW-Authenticate": "Bearer"}
    expected = expected_token(settings)
    if expected is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "no API token is configured on the control plane, so changes are refused: set "
            "RKDSC_CONTROL_TOKEN, or write one to its RKDSC_CONTROL_TOKEN_FILE (`rkdsc up` "
            "does)",
            headers=challenge,
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token", headers=challenge)


RequireToken = Depends(require_token)
"""For ``dependencies=[RequireToken]`` on the mutating routes."""


class TokenFirstRoute(APIRoute):
    """A route that checks the bearer token before reading the body, when it requires one.

    FastAPI parses a JSON body before it runs dependencies: without this, a request with
    no token and a malformed body would get a 422 about the body instead of the 401.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not any(d.dependency is require_token for d in self.dependencies):
            return handler

        async def token_first(request: Request) -> Response:
            require_token(get_state(request).settings, await _bearer(request))
            return await handler(request)

        return token_first
