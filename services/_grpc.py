"""gRPC plumbing shared by the services: options, health, reflection, shutdown, status metrics."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

__all__ = [
    "EXEMPT_SERVICES",
    "MAX_MESSAGE_BYTES",
    "RECONNECT_BACKOFF_MS",
    "BuiltServer",
    "CallMetricsInterceptor",
    "MaxConcurrentRpcs",
    "channel_options",
    "enable_health_and_reflection",
    "grpc_server",
    "is_ready",
    "run_until_signal",
    "server_options",
    "stream_failure_code",
    "wait_until_ready",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""Largest gRPC message either side accepts [bytes] (an encoded image is far below)."""

_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def server_options() -> list[tuple[str, Any]]:
    """Explicit message-size limits and keepalive for every rkdsc server."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # A second server on a taken port must fail, not silently share it.
        ("grpc.so_reuseport", 0),
        *_KEEPALIVE,
    ]


MaxConcurrentRpcs = Annotated[
    int | None,
    Field(
        ge=1,
        description="Streaming RPCs (Classify, link streams) the gRPC server keeps open at "
        "once; more are refused with RESOURCE_EXHAUSTED (None: no limit). Unary calls "
        "(settings, policy, runs), health checks and reflection neither count nor are "
        "refused, so configuration and probes keep working at the limit.",
    ),
]
"""A service setting (``max_concurrent_rpcs``): the server's bound on open streams."""

EXEMPT_SERVICES = ("grpc.health.", "grpc.reflection.")
"""Prefixes of the services (health checks, reflection, any version) whose calls neither
count towards nor are refused by ``max_concurrent_rpcs``, streaming ones (Health.Watch,
reflection) included."""


def grpc_server(
    service: str, registry: CollectorRegistry, max_concurrent_rpcs: int | None = None
) -> grpc.aio.Server:
    """An rkdsc gRPC server: :func:`server_options` and a :class:`CallMetricsInterceptor`
    for ``service`` that also holds it to ``max_concurrent_rpcs`` open streams."""
    return grpc.aio.server(
        options=server_options(),
        interceptors=[CallMetricsInterceptor(service, registry, max_concurrent_rpcs)],
    )


RECONNECT_BACKOFF_MS = (100, 1_000)
"""First and largest wait between reconnection attempts to a service that went away [ms].

gRPC's defaults (1 s growing to 120 s) suit the internet; between the services of one
stack a restarted peer should be found again within a second. gRPC adds jitter.
"""


def channel_options() -> list[tuple[str, Any]]:
    """The client-side counterpart of :func:`server_options`, with quick reconnection."""
    first, largest = RECONNECT_BACKOFF_MS
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", largest),
        *_KEEPALIVE,
    ]


def stream_failure_code(err: grpc.aio.AioRpcError) -> str:
    """The code a frame gets when the stream to the next hop fails with ``err``:
    RESOURCE_EXHAUSTED when the peer is at its ``max_concurrent_rpcs``, else UNAVAILABLE
    (the frame could not be delivered)."""
    return (
        "RESOURCE_EXHAUSTED" if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "UNAVAILABLE"
    )


def is_ready(channel: grpc.aio.Channel) -> bool:
    """Whether ``channel`` is connected now (does not start connecting)."""
    return bool(channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY)


async def wait_until_ready(channel: grpc.aio.Channel) -> None:
    """Return once ``channel`` is READY; connects if idle, gRPC backing off between tries.

    Unbounded: callers wrap it in ``asyncio.wait_for`` with their deadline.
    """
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def enable_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health.aio.HealthServicer:
    """Add the standard health service (all names SERVING) and reflection to ``server``."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, names: Sequence[str], ok: bool) -> None:
    """Mark the overall server ("") and every named service SERVING or NOT_SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *names):
        await servicer.set(name, status)


class CallMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts finished RPCs as ``rkdsc_<service>_grpc_calls_total{method, code}``.

    With ``max_concurrent_rpcs``, a streaming call (request or response streaming) that
    would open one stream more than that is refused with RESOURCE_EXHAUSTED, and counted
    with that code like any other call; a stream holds its slot until it ends. Unary calls
    (configuration, runs) and :data:`EXEMPT_SERVICES` never count and are never refused, so
    the control plane can change a service's settings while its streams are at the limit.
    """

    def __init__(
        self, service: str, registry: CollectorRegistry, max_concurrent_rpcs: int | None = None
    ) -> None:
        if max_concurrent_rpcs is not None and max_concurrent_rpcs < 1:
            raise ValueError(f"max_concurrent_rpcs must be >= 1 or None, got {max_concurrent_rpcs}")
        self.calls = Counter(
            f"rkdsc_{service}_grpc_calls",
            "gRPC calls handled, by method and final status code.",
            ["method", "code"],
            registry=registry,
        )
        self.limit = max_concurrent_rpcs
        self.active = 0  # limited streams open now (one event loop: no lock needed)

    async def _admit(self, ctx: grpc.aio.ServicerContext) -> bool:
        """Take a slot for a limited stream (True), or abort it with RESOURCE_EXHAUSTED."""
        if self.active >= (self.limit or 0):
            await ctx.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server has its limit of {self.limit} streams open "
                "(max_concurrent_rpcs); retry later",
            )
        self.active += 1
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        calls = self.calls
        streaming = handler.request_streaming or handler.response_streaming
        limited = self.limit is not None and streaming and not service.startswith(EXEMPT_SERVICES)
        admit = self._admit

        def release(taken: bool) -> None:
            if taken:
                self.active -= 1

        def wrap(fn: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
            # A streaming handler is an async generator, or a coroutine that writes with
            # context.write() (e.g. Health.Watch): wrap each kind as its own kind.
            if streaming_response and inspect.isasyncgenfunction(fn):

                async def gen(req: Any, ctx: grpc.aio.ServicerContext) -> Any:
                    error: BaseException | None = None
                    taken = False
                    try:
                        taken = limited and await admit(ctx)
                        async for item in fn(req, ctx):
                            yield item
                    except BaseException as e:
                        error = e
                        raise
                    finally:
                        release(taken)
                        calls.labels(method, _code(ctx, error)).inc()

                return gen

            async def unary(req: Any, ctx: grpc.aio.ServicerContext) -> Any:
                error: BaseException | None = None
                taken = False
                try:
                    taken = limited and await admit(ctx)
                    return await fn(req, ctx)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    release(taken)
                    calls.labels(method, _code(ctx, error)).inc()

            return unary

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary, False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                wrap(handler.stream_stream, True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, True),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )


def _code(ctx: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status the client gets: the one set on ``ctx`` (an abort sets it), else
    CANCELLED for a cancelled call, UNKNOWN for any other exception (what gRPC answers
    for a handler that raises), else OK."""
    code = ctx.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "OK" if error is None else "UNKNOWN"


async def run_until_signal(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Sequence[str],
    *,
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; then report NOT_SERVING, drain, and stop within the grace.

    In-flight calls get ``grace_seconds`` to finish (``server.stop(grace)``), new ones are
    refused; ``on_stop`` runs first (e.g. to close outgoing streams).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: NOT_SERVING, draining for up to %.1f s", grace_seconds)
    await set_serving(health_servicer, service_names, False)
    if on_stop is not None:
        await on_stop()
    await server.stop(grace_seconds)


class _DrainableServicer(Protocol):
    async def drain(self, timeout: float) -> None: ...

    async def close(self) -> None: ...


_S = TypeVar("_S", bound=_DrainableServicer)


@dataclass
class BuiltServer(Generic[_S]):
    """A built (not yet started) gRPC server, its servicer and health servicer.

    Subclasses name their service in ``service_name``. The servicer drains (stops reading,
    lets in-flight frames finish within a timeout) and closes (releases its resources).
    """

    service_name: ClassVar[str]

    server: grpc.aio.Server
    port: int
    servicer: _S
    health: Any  # grpc_health.v1.health.aio.HealthServicer
    grace_seconds: float

    async def start(self) -> None:
        """Start serving and report SERVING."""
        await self.server.start()
        await set_serving(self.health, [self.service_name], True)

    async def drain(self) -> None:
        """Stop reading frames, let in-flight ones finish (up to the grace), end the streams."""
        await self.servicer.drain(self.grace_seconds)

    async def stop(self) -> None:
        """NOT_SERVING, drain, then stop the server within the grace; release the resources."""
        await set_serving(self.health, [self.service_name], False)
        await self.drain()
        await self.server.stop(self.grace_seconds)
        await self.servicer.close()

    async def serve_until_signal(self) -> None:
        """Serve until SIGTERM/SIGINT (see :func:`run_until_signal`), then release."""
        try:
            await run_until_signal(
                self.server,
                self.health,
                [self.service_name],
                grace_seconds=self.grace_seconds,
                on_stop=self.drain,
            )
        finally:
            await self.servicer.close()
