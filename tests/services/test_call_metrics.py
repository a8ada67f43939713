"""``CallMetricsInterceptor`` labels each finished call with the status the client gets."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rkdsc_core.link import LinkBundle
from services._grpc import (
    CallMetricsInterceptor,
    enable_health_and_reflection,
    grpc_server,
    stream_failure_code,
)
from services.channel.settings import ChannelParams
from services.pb import frame_pb2, services_pb2, services_pb2_grpc

from .channel.helpers import FakeReceiver, register_receiver, running_channel, symbol_frames

_TIMEOUT_S = 10.0


async def _ok(request: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
    return request


async def _boom(request: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug in the handler")


async def _refuse(request: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
    await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
    raise AssertionError("unreachable")


async def _forever(request: bytes, ctx: grpc.aio.ServicerContext) -> Any:
    yield b"first"
    await asyncio.sleep(_TIMEOUT_S)  # the client cancels before this ends
    yield b"never"


def _handlers() -> grpc.GenericRpcHandler:
    unary = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler(
        "t.T",
        {
            "Ok": unary(_ok),
            "Boom": unary(_boom),
            "Refuse": unary(_refuse),
            "Forever": grpc.unary_stream_rpc_method_handler(_forever),
        },
    )


def test_errors_and_cancellations_are_not_counted_as_ok() -> None:
    registry = CollectorRegistry()

    async def main() -> None:
        server = grpc.aio.server(interceptors=[CallMetricsInterceptor("test", registry)])
        server.add_generic_rpc_handlers((_handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await channel.unary_unary("/t.T/Ok")(b"x", timeout=_TIMEOUT_S) == b"x"
                for method, code in (("Boom", "UNKNOWN"), ("Refuse", "INVALID_ARGUMENT")):
                    try:
                        await channel.unary_unary(f"/t.T/{method}")(b"x", timeout=_TIMEOUT_S)
                    except grpc.aio.AioRpcError as e:
                        assert e.code().name == code
                    else:
                        raise AssertionError(f"{method} did not fail")
                call = channel.unary_stream("/t.T/Forever")(b"x", timeout=_TIMEOUT_S)
                assert await call.read() == b"first"
                call.cancel()
                for _ in range(100):  # the server side finishes shortly after the cancel
                    if registry.get_sample_value(
                        "rkdsc_test_grpc_calls_total", {"method": "Forever", "code": "CANCELLED"}
                    ):
                        break
                    await asyncio.sleep(0.05)
        finally:
            await server.stop(grace=None)

    asyncio.run(asyncio.wait_for(main(), 3 * _TIMEOUT_S))

    def count(method: str, code: str) -> float | None:
        labels = {"method": method, "code": code}
        return registry.get_sample_value("rkdsc_test_grpc_calls_total", labels)

    assert count("Ok", "OK") == 1
    assert count("Boom", "UNKNOWN") == 1 and count("Boom", "OK") is None
    assert count("Refuse", "INVALID_ARGUMENT") == 1
    assert count("Forever", "CANCELLED") == 1 and count("Forever", "OK") is None


def test_grpc_server_refuses_streams_beyond_its_limit() -> None:
    """``max_concurrent_rpcs``: with the streams at the limit, one more stream is
    RESOURCE_EXHAUSTED and counted so, while unary calls and health checks are served;
    once a stream ends, a new one is served again."""
    registry = CollectorRegistry()

    async def main() -> None:
        server = grpc_server("test", registry, max_concurrent_rpcs=1)
        server.add_generic_rpc_handlers((_handlers(),))
        enable_health_and_reflection(server, [])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                forever = channel.unary_stream("/t.T/Forever")
                call = forever(b"x", timeout=_TIMEOUT_S)
                assert await call.read() == b"first"
                try:
                    await forever(b"x", timeout=_TIMEOUT_S).read()
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "max_concurrent_rpcs" in (e.details() or "")
                else:
                    raise AssertionError("a second stream was served beyond the limit")
                ok = channel.unary_unary("/t.T/Ok")
                assert await ok(b"x", timeout=_TIMEOUT_S) == b"x"  # unary: never limited
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=_TIMEOUT_S)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                call.cancel()
                for _ in range(100):  # the server frees the slot shortly after the cancel
                    again = forever(b"y", timeout=_TIMEOUT_S)
                    try:
                        assert await again.read() == b"first"
                        again.cancel()
                        break
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the slot was never freed")
        finally:
            await server.stop(grace=None)

    asyncio.run(asyncio.wait_for(main(), 3 * _TIMEOUT_S))

    def count(method: str, code: str) -> float | None:
        labels = {"method": method, "code": code}
        return registry.get_sample_value("rkdsc_test_grpc_calls_total", labels)

    assert (count("Forever", "RESOURCE_EXHAUSTED") or 0) >= 1
    assert count("Ok", "OK") == 1 and count("Ok", "RESOURCE_EXHAUSTED") is None


@pytest.mark.parametrize("service", ["transmitter", "channel", "receiver"])
def test_each_service_takes_its_limit_from_the_environment(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = importlib.import_module(f"services.{service}.settings").Settings
    assert settings().max_concurrent_rpcs is None  # no limit unless asked
    monkeypatch.setenv(f"RKDSC_{service.upper()}_MAX_CONCURRENT_RPCS", "7")
    assert settings().max_concurrent_rpcs == 7
    monkeypatch.setenv(f"RKDSC_{service.upper()}_MAX_CONCURRENT_RPCS", "0")
    with pytest.raises(ValidationError, match="max_concurrent_rpcs"):
        settings()


def test_the_channel_server_is_built_with_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.channel import server as channel_server
    from services.channel.settings import Settings

    made: list[int | None] = []

    def recording(service: str, registry: CollectorRegistry, limit: int | None) -> Any:
        made.append(limit)
        return grpc_server(service, registry, limit)

    async def main() -> None:  # a gRPC aio server is built inside its event loop
        built = channel_server.build_server(Settings(port=0, max_concurrent_rpcs=3))
        await built.server.stop(grace=None)

    monkeypatch.setattr(channel_server, "grpc_server", recording)
    asyncio.run(asyncio.wait_for(main(), _TIMEOUT_S))
    assert made == [3]


def test_the_channel_takes_new_settings_with_its_link_streams_at_the_limit(
    tiny_link: LinkBundle, request: pytest.FixtureRequest, run_async: Any
) -> None:
    """The reviewer's case: a channel emulator whose link streams fill its limit still
    answers GetSettings/SetSettings (PUT /v1/channel), while one more link stream is
    refused with RESOURCE_EXHAUSTED."""
    serve_fake = request.getfixturevalue("grpc_server")  # conftest's, not services._grpc's
    limit = 2
    frames = [symbol_frames(tiny_link, 1, length=8, link_id=f"link-{i}")[0] for i in range(2)]
    new = ChannelParams(model="rayleigh", snr_db=-5.0).to_proto(0)

    async def main() -> Any:
        done = asyncio.Event()

        async def one_frame_then_wait(i: int) -> AsyncIterator[frame_pb2.SymbolFrame]:
            yield frames[i].message
            await done.wait()

        async def nothing_until_done() -> AsyncIterator[frame_pb2.SymbolFrame]:
            # The refused stream sends nothing: a frame written while the server aborts the
            # call races the abort (the client then sees INTERNAL, not the server's status).
            await done.wait()
            return
            yield  # an async generator

        async with (
            serve_fake(register_receiver(FakeReceiver())) as port,
            running_channel(f"127.0.0.1:{port}", max_concurrent_rpcs=limit) as emu,
        ):
            stub = services_pb2_grpc.ChannelEmulatorStub(emu.channel)
            links = [stub.Transmit(one_frame_then_wait(i), timeout=_TIMEOUT_S) for i in range(2)]
            for call in links:  # each stream is open on the server: it answered a frame
                assert (await call.read()).fate == frame_pb2.FRAME_FATE_PREDICTED
            reply = await stub.SetSettings(new, timeout=_TIMEOUT_S)
            got = await stub.GetSettings(services_pb2.GetChannelRequest(), timeout=_TIMEOUT_S)
            extra = stub.Transmit(nothing_until_done(), timeout=_TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra.read()
            done.set()
            for call in links:  # the request sides end: the streams close cleanly
                assert await call.read() is grpc.aio.EOF
                assert await call.code() == grpc.StatusCode.OK
            return reply, got, refused.value

    reply, got, refused = run_async(main())
    assert (reply.version, reply.model, reply.snr_db) == (2, "rayleigh", -5.0)
    assert got == reply
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_rpcs" in (refused.details() or "")


def test_a_peer_at_its_limit_is_named_in_the_frames_error() -> None:
    """A link stream refused at the next hop's limit fails its frames as RESOURCE_EXHAUSTED,
    so run and bench tallies show the cause; any other stream failure as UNAVAILABLE."""
    none = grpc.aio.Metadata()
    for code, want in (
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
        (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        (grpc.StatusCode.INTERNAL, "UNAVAILABLE"),
    ):
        assert stream_failure_code(grpc.aio.AioRpcError(code, none, none, "x")) == want
