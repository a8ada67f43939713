"""``CallMetricsInterceptor`` labels each finished call with the status the client gets."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from services._grpc import CallMetricsInterceptor

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
