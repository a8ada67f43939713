"""gRPC failures as HTTP answers: status mapping and 422 bodies that name the field."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.control.clients import ServiceError

__all__ = [
    "http_status",
    "rejected",
    "request_validation_handler",
    "service_error_handler",
    "validation_error",
]

_LABELS = {"transmitter": "transmitter", "channel": "channel emulator", "receiver": "receiver"}

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: status.HTTP_422_UNPROCESSABLE_CONTENT,
    grpc.StatusCode.OUT_OF_RANGE: status.HTTP_422_UNPROCESSABLE_CONTENT,
    grpc.StatusCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: status.HTTP_409_CONFLICT,
    grpc.StatusCode.ALREADY_EXISTS: status.HTTP_409_CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: status.HTTP_429_TOO_MANY_REQUESTS,
    grpc.StatusCode.UNIMPLEMENTED: status.HTTP_501_NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: status.HTTP_504_GATEWAY_TIMEOUT,
}


def http_status(err: ServiceError) -> int:
    """The HTTP status for a failed gRPC call (502 for anything unexpected)."""
    return _STATUS.get(err.code, status.HTTP_502_BAD_GATEWAY)


def _message(err: ServiceError) -> str:
    label = _LABELS.get(err.service, err.service)
    where = f" at {err.target}" if err.target else ""
    if err.code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"the {label}{where} is unavailable ({err.message or 'no answer'}); is it running? "
            "(`rkdsc up` starts all services)"
        )
    if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the {label}{where} did not answer within the deadline"
    return f"the {label} answered {err.code.name}: {err.message}"


def validation_error(field: str | None, msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a FastAPI-style 422 ``detail`` list."""
    loc: list[str] = ["body"] if field is None else ["body", field]
    return {"type": kind, "loc": loc, "msg": msg}


def rejected(
    err: ServiceError, fields: Mapping[str, Sequence[str]], given: Iterable[str]
) -> HTTPException:
    """A service's INVALID_ARGUMENT as a 422 naming the field it is about.

    ``fields`` maps each field to the words that name it in a service message (``L`` for
    ``fixed_length``). The field is the one the message mentions first; else, if the update
    set exactly one field, that one; else the body as a whole.
    """
    given = list(given)
    mentions: list[tuple[int, int, str]] = []
    for order, (name, words) in enumerate(fields.items()):
        for word in words:
            hit = re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", err.message)
            if hit is not None:
                mentions.append((hit.start(), order, name))
    field = min(mentions)[2] if mentions else None
    if field is None and len(given) == 1:
        field = given[0]
    prefix = f"{field}: " if field is not None and not err.message.startswith(field) else ""
    label = _LABELS.get(err.service, err.service)
    msg = f"{prefix}{err.message} (rejected by the {label})"
    detail = [validation_error(field, msg, "service_rejected")]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


async def service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any ServiceError a route lets through."""
    assert isinstance(exc, ServiceError)
    code = http_status(exc)
    if code == status.HTTP_422_UNPROCESSABLE_CONTENT:
        detail: Any = [validation_error(None, _message(exc), "service_rejected")]
    else:
        detail = _message(exc)
    headers = {"Retry-After": "1"} if code == status.HTTP_503_SERVICE_UNAVAILABLE else None
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by its name (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a request body that fails validation, also when the rejected
    value is NaN or infinite (``{"snr_db": NaN}``), which the default handler cannot put
    into JSON and answers with a 500."""
    assert isinstance(exc, RequestValidationError)
    detail = _finite(jsonable_encoder(exc.errors()))
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
