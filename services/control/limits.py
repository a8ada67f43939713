"""Request body size limit of the control plane: 413 past ``max_body_bytes``, chunked too."""

from __future__ import annotations

import json

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware", "body_too_large"]


def body_too_large(limit: int) -> str:
    """The 413 message for a body larger than ``limit`` bytes."""
    return (
        f"request body larger than {limit} bytes (the control plane's limit, "
        "RKDSC_CONTROL_MAX_BODY_BYTES)"
    )


class _TooLarge(HTTPException):
    """The body read so far passed the limit (raised from the wrapped ``receive``).

    An ``HTTPException``, so FastAPI's body reading lets it through (it turns other errors
    into 400) and its handler answers 413 ``{"detail": ...}``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, body_too_large(limit))


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: answer 413 to a request body over ``max_bytes``.

    A ``Content-Length`` over the limit is refused before anything is read; a body without
    one (chunked) is counted as it is read, and refused once it passes the limit. The answer
    is ``{"detail": "..."}``, like the API's other errors.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length == -1:
            await _send_json(send, status.HTTP_400_BAD_REQUEST, "invalid Content-Length header")
            return
        if length is not None and length > self.max_bytes:
            await _send_json(
                send, status.HTTP_413_CONTENT_TOO_LARGE, body_too_large(self.max_bytes)
            )
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as err:
            if started:
                raise
            await _send_json(send, err.status_code, str(err.detail))


def _content_length(scope: Scope) -> int | None:
    """The declared body length; ``None`` if absent, ``-1`` if malformed."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return -1
    return int(values[0])


async def _send_json(send: Send, code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
