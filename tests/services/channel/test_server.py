"""The channel emulator over gRPC, with a fake receiver on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rkdsc_core.link import LinkBundle
from services._wire import from_wire
from services.channel.server import SERVICE_NAME, serve
from services.channel.settings import ChannelParams
from services.channel.settings import Settings as ChannelSettings
from services.pb import frame_pb2, services_pb2, services_pb2_grpc

from .helpers import (
    FakeReceiver,
    Running,
    reference_channel,
    register_receiver,
    running_channel,
    symbol_frames,
    transmit,
)

PREDICTED, LOST, ERROR = (
    frame_pb2.FRAME_FATE_PREDICTED,
    frame_pb2.FRAME_FATE_LOST,
    frame_pb2.FRAME_FATE_ERROR,
)


def stub(emu: Running) -> services_pb2_grpc.ChannelEmulatorStub:
    return services_pb2_grpc.ChannelEmulatorStub(emu.channel)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` every 10 ms until it holds; fail after ``timeout`` [s]."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WithFake = Callable[..., Awaitable[Any]]


@pytest.fixture
def with_fake(grpc_server: Any, run_async: Any) -> Callable[..., Any]:
    """``with_fake(body, fake=None, **settings)``: run ``body(emu, fake)`` against a started
    emulator whose receiver is a :class:`FakeReceiver`; returns ``(body result, fake)``."""

    def go(body: WithFake, fake: FakeReceiver | None = None, **overrides: Any) -> Any:
        fake = fake if fake is not None else FakeReceiver()

        async def main() -> Any:
            async with (
                grpc_server(register_receiver(fake)) as port,
                running_channel(f"127.0.0.1:{port}", **overrides) as emu,
            ):
                return await body(emu, fake)

        return run_async(main()), fake

    return go


class TestTransmit:
    def test_forwards_frames_impaired_by_the_training_channel(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = symbol_frames(tiny_link, 3, length=16)
        settings = {"model": "rician", "k_factor": 2.0, "fading": "fast", "snr_db": 4.0}
        settings |= {"erasure_prob": 0.25, "seed": 11}

        async def body(emu: Running, fake: FakeReceiver) -> dict[int, frame_pb2.FrameResult]:
            return await transmit(stub(emu), [f.message for f in frames])

        results, fake = with_fake(body, **settings)
        params = ChannelSettings(**settings).channel_params()
        p, length = tiny_link.pipeline.num_pilots, 16
        assert sorted(cf.frame.sequence for cf in fake.frames) == [0, 1, 2]
        for cf in fake.frames:
            sent = frames[cf.frame.sequence]
            out = reference_channel(tiny_link, sent, params)
            y = from_wire(cf.frame.pilots + cf.frame.symbols, p + length)
            assert torch.equal(y, out.y[0])
            assert torch.equal(from_wire(cf.channel.gains, p + length), out.h[0])
            assert cf.channel.received == out.received[0].to(torch.uint8).numpy().tobytes()
            assert cf.channel.n0 == pytest.approx(float(out.n0[0]), rel=1e-7)
            assert (cf.channel.model, cf.channel.snr_db, cf.channel.config_version) == (
                "rician",
                4.0,
                1,
            )
            assert cf.frame.image_id == sent.message.image_id
        assert all(r.fate == PREDICTED for r in results.values())

    def test_lost_frames_are_answered_without_reaching_the_receiver(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = symbol_frames(tiny_link, 8, length=8)
        params = ChannelParams(frame_loss_prob=0.5, seed=3)
        lost = {
            f.message.sequence
            for f in frames
            if bool(reference_channel(tiny_link, f, params).frame_lost[0])
        }
        assert 0 < len(lost) < 8  # this seed loses some frames, not all

        async def body(emu: Running, fake: FakeReceiver) -> dict[int, frame_pb2.FrameResult]:
            return await transmit(stub(emu), [f.message for f in frames])

        results, fake = with_fake(body, frame_loss_prob=0.5, seed=3)
        assert {s for s, r in results.items() if r.fate == LOST} == lost
        assert {cf.frame.sequence for cf in fake.frames} == set(range(8)) - lost
        assert all(results[s].channel_config_version == 1 for s in lost)

    @pytest.mark.parametrize(
        ("corrupt", "max_symbols", "message"),
        [
            (lambda m: setattr(m, "num_symbols", 17), 4096, "symbols: expected 17"),
            (lambda m: setattr(m, "symbols", m.symbols[:-3]), 4096, "symbols: expected 16"),
            (lambda m: setattr(m, "pilots", m.pilots[:-1]), 4096, "pilots: 31 bytes"),
            (
                lambda m: setattr(m, "symbols", b"\x00\x00\xc0\x7f" + m.symbols[4:]),
                4096,
                "NaN",
            ),
            (lambda m: None, 19, "exceeds the maximum of 19"),
            (lambda m: setattr(m, "num_symbols", 0), 4096, "num_symbols"),
        ],
        ids=["wrong-L", "bytes-not-8L", "pilot-bytes", "nan", "oversize", "empty"],
    )
    def test_bad_frame_gets_an_error_and_the_stream_goes_on(
        self,
        tiny_link: LinkBundle,
        with_fake: Any,
        corrupt: Callable[[frame_pb2.SymbolFrame], None],
        max_symbols: int,
        message: str,
    ) -> None:
        bad, good = (f.message for f in symbol_frames(tiny_link, 2, length=16))
        if max_symbols < 20:
            good = symbol_frames(tiny_link, 1, length=8, first_sequence=1)[0].message
        corrupt(bad)

        async def body(emu: Running, fake: FakeReceiver) -> dict[int, frame_pb2.FrameResult]:
            return await transmit(stub(emu), [bad, good])

        results, fake = with_fake(body, max_symbols=max_symbols)
        assert results[0].fate == ERROR
        assert results[0].error.startswith("INVALID_ARGUMENT:")
        assert message in results[0].error
        assert results[1].fate == PREDICTED
        assert [cf.frame.sequence for cf in fake.frames] == [1]

    def test_unreachable_receiver_gives_unavailable_errors(
        self, tiny_link: LinkBundle, run_async: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 3, length=8)]

        async def main() -> dict[int, frame_pb2.FrameResult]:
            async with running_channel(f"127.0.0.1:{free_port()}") as emu:
                return await transmit(stub(emu), frames)

        results = run_async(main())
        assert sorted(results) == [0, 1, 2]
        for r in results.values():
            assert r.fate == ERROR
            assert r.error.startswith("UNAVAILABLE: receiver 127.0.0.1:")

    def test_a_frame_expiring_while_the_receiver_is_unreachable_is_answered_at_its_expiry(
        self, tiny_link: LinkBundle, run_async: Any
    ) -> None:
        (frame,) = [f.message for f in symbol_frames(tiny_link, 1, length=8)]

        async def main() -> tuple[frame_pb2.FrameResult, float, float | None]:
            target = f"127.0.0.1:{free_port()}"
            async with running_channel(target, deadline_seconds=3.0) as emu:
                frame.expires_unix_ns = time.time_ns() + 300_000_000  # 0.3 s; it waits 3
                start = time.perf_counter()
                results = await transmit(stub(emu), [frame])
                seconds = time.perf_counter() - start
                return results[0], seconds, emu.sample("rkdsc_channel_frames_expired_total")

        result, seconds, expired = run_async(main())
        assert result.error.startswith(
            "DEADLINE_EXCEEDED: the frame expired while the channel emulator waited for receiver"
        )
        assert 0.2 < seconds < 2.0
        assert expired == 1

    def test_a_frame_expiring_during_the_delay_is_not_forwarded(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        (frame,) = [f.message for f in symbol_frames(tiny_link, 1, length=8)]

        async def body(emu: Running, fake: FakeReceiver) -> tuple[Any, float]:
            frame.expires_unix_ns = time.time_ns() + 200_000_000  # 0.2 s, the delay is 1 s
            start = time.perf_counter()
            results = await transmit(stub(emu), [frame])
            return results[0], time.perf_counter() - start

        (result, seconds), fake = with_fake(body, delay_seconds=1.0)
        assert result.error.startswith(
            "DEADLINE_EXCEEDED: the frame expired while the channel emulator delayed it"
        )
        assert seconds < 0.9
        assert fake.frames == []

    def test_silent_receiver_times_out_each_frame(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 2, length=8)]

        async def body(emu: Running, fake: FakeReceiver) -> dict[int, frame_pb2.FrameResult]:
            return await transmit(stub(emu), frames)

        results, _ = with_fake(body, FakeReceiver(mute=True), deadline_seconds=0.3)
        assert [r.fate for r in results.values()] == [ERROR, ERROR]
        assert all(r.error.startswith("DEADLINE_EXCEEDED: receiver") for r in results.values())

    def test_expired_frames_are_neither_impaired_nor_forwarded(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 3, length=8)]
        now = time.time_ns()
        frames[0].expires_unix_ns = now - 1_000_000  # expired 1 ms ago
        frames[1].expires_unix_ns = now + 60 * 10**9  # a minute left: the emulator's 8 s win

        async def body(emu: Running, fake: FakeReceiver) -> Any:
            results = await transmit(stub(emu), frames)
            return results, emu.sample("rkdsc_channel_frames_expired_total")

        (results, expired), fake = with_fake(body, deadline_seconds=8.0)
        assert [results[i].fate for i in range(3)] == [ERROR, PREDICTED, PREDICTED]
        assert results[0].error.startswith("DEADLINE_EXCEEDED: the frame expired ")
        assert "before the channel emulator" in results[0].error
        assert expired == 1
        forwarded = {cf.frame.sequence: cf.frame.expires_unix_ns for cf in fake.frames}
        assert sorted(forwarded) == [1, 2]
        for expires in forwarded.values():  # the receiver is told when the emulator gives up
            assert now + 7 * 10**9 < expires <= time.time_ns() + 8 * 10**9

    def test_a_silent_receiver_is_given_up_on_at_the_frames_own_expiry(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        (frame,) = [f.message for f in symbol_frames(tiny_link, 1, length=8)]

        async def body(emu: Running, fake: FakeReceiver) -> tuple[Any, float]:
            frame.expires_unix_ns = time.time_ns() + 300_000_000  # 0.3 s, well before 8 s
            start = time.perf_counter()
            results = await transmit(stub(emu), [frame])
            return results[0], time.perf_counter() - start

        (result, seconds), _ = with_fake(body, FakeReceiver(mute=True), deadline_seconds=8.0)
        assert result.error.startswith("DEADLINE_EXCEEDED: receiver")
        assert 0.2 < seconds < 4.0

    def test_reads_at_most_queue_size_frames_ahead(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 8, length=8)]
        hold = asyncio.Event()

        async def body(emu: Running, fake: FakeReceiver) -> tuple[float | None, int]:
            call = stub(emu).Transmit(iter(frames), timeout=15)
            depth = lambda: emu.sample("rkdsc_channel_queue_depth")  # noqa: E731
            await eventually(lambda: len(fake.frames) == 1 and depth() == 2)
            await asyncio.sleep(0.2)  # nothing more is read while the receiver stalls
            stalled = depth()
            hold.set()
            results = [r async for r in call]
            return stalled, len(results)

        (stalled, answered), _ = with_fake(body, FakeReceiver(hold=hold), queue_size=2)
        assert stalled == 2
        assert answered == 8

    def test_cancelled_stream_releases_its_frames(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 3, length=8)]
        hold = asyncio.Event()

        async def body(emu: Running, fake: FakeReceiver) -> float | None:
            call = stub(emu).Transmit(iter(frames), timeout=15)
            depth = lambda: emu.sample("rkdsc_channel_queue_depth")  # noqa: E731
            await eventually(lambda: depth() == 3)
            call.cancel()
            await eventually(lambda: depth() == 0)
            hold.set()
            await eventually(lambda: emu.built.servicer.open_streams == 0)
            return depth()

        depth, _ = with_fake(body, FakeReceiver(hold=hold))
        assert depth == 0

    def test_delay_is_added_before_forwarding(self, tiny_link: LinkBundle, with_fake: Any) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 2, length=8)]

        async def body(emu: Running, fake: FakeReceiver) -> dict[int, frame_pb2.FrameResult]:
            return await transmit(stub(emu), frames)

        results, fake = with_fake(body, delay_seconds=0.2)
        assert all(r.fate == PREDICTED for r in results.values())
        assert all(cf.channel.channel_seconds >= 0.2 for cf in fake.frames)


class TestSettingsRpc:
    def test_get_settings_reports_the_initial_config_as_version_1(self, with_fake: Any) -> None:
        async def body(emu: Running, fake: FakeReceiver) -> services_pb2.ChannelSettings:
            return await stub(emu).GetSettings(services_pb2.GetChannelRequest(), timeout=5)

        got, _ = with_fake(body, snr_db=7.0, model="rayleigh")
        assert (got.version, got.model, got.snr_db, got.fading) == (1, "rayleigh", 7.0, "block")

    def test_set_settings_applies_to_later_frames_on_an_open_stream(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        first, second = (f.message for f in symbol_frames(tiny_link, 2, length=8))
        new = ChannelParams(model="rayleigh", snr_db=-5.0).to_proto(0)

        async def body(emu: Running, fake: FakeReceiver) -> Any:
            swapped = asyncio.Event()

            async def requests() -> AsyncIterator[frame_pb2.SymbolFrame]:
                yield first
                await swapped.wait()
                yield second

            results = []
            call = stub(emu).Transmit(requests(), timeout=15)
            async for r in call:
                results.append(r)
                if len(results) == 1:
                    reply = await stub(emu).SetSettings(new, timeout=5)
                    swapped.set()
            return reply, results

        (reply, results), fake = with_fake(body)
        assert reply.version == 2 and reply.model == "rayleigh" and reply.snr_db == -5.0
        assert [r.channel_config_version for r in results] == [1, 2]
        states = [cf.channel for cf in fake.frames]
        assert [(s.config_version, s.model, s.snr_db) for s in states] == [
            (1, "awgn", 20.0),
            (2, "rayleigh", -5.0),
        ]

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("model", "wifi"),
            ("snr_db", 75.0),
            ("erasure_prob", 1.0),
            ("frame_loss_prob", -0.2),
            ("k_factor", -1.0),
            ("delay_seconds", -1.0),
            ("fading", ""),
        ],
    )
    def test_invalid_settings_are_rejected_and_nothing_changes(
        self, with_fake: Any, field: str, value: object
    ) -> None:
        bad = ChannelParams(model="rician", snr_db=3.0).to_proto(0)
        setattr(bad, field, value)

        async def body(emu: Running, fake: FakeReceiver) -> Any:
            s = stub(emu)
            before = await s.GetSettings(services_pb2.GetChannelRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await s.SetSettings(bad, timeout=5)
            after = await s.GetSettings(services_pb2.GetChannelRequest(), timeout=5)
            return err.value, before, after

        (err, before, after), _ = with_fake(body)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.details()
        assert after == before and after.version == 1


class TestHealthAndReflection:
    def test_health_reports_serving(self, with_fake: Any) -> None:
        async def body(emu: Running, fake: FakeReceiver) -> list[int]:
            health = health_pb2_grpc.HealthStub(emu.channel)
            return [
                (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
                for name in ("", SERVICE_NAME)
            ]

        statuses, _ = with_fake(body)
        assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2

    def test_shutdown_reports_not_serving_and_drains_in_flight_frames(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 2, length=8)]
        hold = asyncio.Event()

        async def body(emu: Running, fake: FakeReceiver) -> tuple[int, list[int]]:
            call = stub(emu).Transmit(iter(frames), timeout=15)
            await eventually(lambda: emu.sample("rkdsc_channel_queue_depth") == 2)
            stopping = asyncio.create_task(emu.built.stop())
            health = health_pb2_grpc.HealthStub(emu.channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            status = health_pb2.HealthCheckResponse.SERVING
            async with asyncio.timeout(5):
                while status == health_pb2.HealthCheckResponse.SERVING:
                    status = (await health.Check(request, timeout=5)).status
            hold.set()
            fates = [r.fate async for r in call]
            await stopping
            return status, fates

        (status, fates), _ = with_fake(body, FakeReceiver(hold=hold), grace_seconds=5.0)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert fates == [PREDICTED, PREDICTED]

    def test_reflection_lists_the_services(self, with_fake: Any) -> None:
        async def body(emu: Running, fake: FakeReceiver) -> set[str]:
            refl = reflection_pb2_grpc.ServerReflectionStub(emu.channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for reply in refl.ServerReflectionInfo(iter([request]), timeout=5):
                return {s.name for s in reply.list_services_response.service}
            return set()

        names, _ = with_fake(body)
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names

    def test_sigterm_stops_serve(self, run_async: Any) -> None:
        port = free_port()
        settings = ChannelSettings(port=port, receiver_target=f"127.0.0.1:{free_port()}")

        async def main() -> int:
            before = signal.getsignal(signal.SIGTERM)
            server = asyncio.create_task(serve(settings))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                reply = await health.Check(request, timeout=5, wait_for_ready=True)
            await eventually(lambda: signal.getsignal(signal.SIGTERM) is not before)
            signal.raise_signal(signal.SIGTERM)
            await asyncio.wait_for(server, 5)
            return int(reply.status)

        assert run_async(main()) == health_pb2.HealthCheckResponse.SERVING


class TestMetrics:
    def test_frames_config_and_calls_are_counted(
        self, tiny_link: LinkBundle, with_fake: Any
    ) -> None:
        frames = [f.message for f in symbol_frames(tiny_link, 8, length=16)]
        frames[0].num_symbols = 3  # bytes do not match: an error
        lost_free = ChannelParams(snr_db=12.5).to_proto(0)

        async def body(emu: Running, fake: FakeReceiver) -> dict[str, float | None]:
            await stub(emu).SetSettings(lost_free, timeout=5)
            await transmit(stub(emu), frames)
            return {
                "forwarded": emu.sample("rkdsc_channel_frames_total", fate="forwarded"),
                "error": emu.sample("rkdsc_channel_frames_total", fate="error"),
                "lost": emu.sample("rkdsc_channel_frames_total", fate="lost"),
                "symbols": emu.sample("rkdsc_channel_symbols_per_frame_sum"),
                "processed": emu.sample("rkdsc_channel_processing_seconds_count"),
                "depth": emu.sample("rkdsc_channel_queue_depth"),
                "version": emu.sample("rkdsc_channel_config_version"),
                "snr": emu.sample("rkdsc_channel_snr_db"),
                "changes": emu.sample("rkdsc_channel_config_changes_total"),
                "calls": emu.sample(
                    "rkdsc_channel_grpc_calls_total", method="SetSettings", code="OK"
                ),
            }

        got, _ = with_fake(body)
        assert got == {
            "forwarded": 7.0,
            "error": 1.0,
            "lost": 0.0,
            "symbols": 7 * 16.0,
            "processed": 8.0,
            "depth": 0.0,
            "version": 2.0,
            "snr": 12.5,
            "changes": 1.0,
            "calls": 1.0,
        }
