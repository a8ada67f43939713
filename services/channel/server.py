"""The channel emulator: impairs symbol frames with ``rkdsc_core.channel`` and relays results.

Each ``Transmit`` stream (one per transmitter link) gets one ``Receiver.Decode`` stream;
impaired frames go to the receiver and its results come back on the transmitter's stream.
Lost frames are answered here (fate ``LOST``), bad frames too (fate ``ERROR``), and so are
frames past their expiry (``DEADLINE_EXCEEDED``, neither impaired nor forwarded); every frame
gets exactly one result. One channel config serves every link (no per-link settings).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import torch
from prometheus_client import CollectorRegistry

from rkdsc_core.channel import Channel, frame_generator
from services._deadline import expired_error, expiry_after, seconds_left
from services._grpc import (
    BuiltServer,
    channel_options,
    enable_health_and_reflection,
    grpc_server,
    is_ready,
    stream_failure_code,
    wait_until_ready,
)
from services._tls import add_port, open_channel
from services._wire import COMPLEX64_BYTES, WireError, from_wire, to_wire
from services.channel.metrics import ChannelMetrics
from services.channel.settings import ChannelParams, Settings
from services.pb import frame_pb2, services_pb2, services_pb2_grpc

__all__ = [
    "SERVICE_NAME",
    "AppliedChannel",
    "ChannelEmulatorServicer",
    "ChannelServer",
    "build_server",
    "impair_frame",
    "serve",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "rkdsc.v1.ChannelEmulator"
"""Full name of the gRPC service (also its health-check name)."""

_MAX_SEQUENCE = 2**63 - 1  # frame_generator hashes the sequence as a signed 64-bit integer
_EXECUTOR_WORKERS = 2
_RECEIVER_CLOSE_SECONDS = 5.0  # wait for the receiver to end a stream we closed


@dataclass(frozen=True)
class AppliedChannel:
    """The config in force: validated params, their version and the channel module."""

    version: int
    params: ChannelParams
    channel: Channel

    @classmethod
    def build(cls, params: ChannelParams, version: int) -> AppliedChannel:
        return cls(version, params, params.channel())


def impair_frame(
    frame: frame_pb2.SymbolFrame, applied: AppliedChannel, max_symbols: int
) -> frame_pb2.ChannelFrame:
    """Validate one frame and put it through the channel (blocking; run it in a thread).

    The frame ``[1, P + L]`` (pilots first) is impaired by ``applied.channel`` under
    ``torch.no_grad()`` at ``applied.params.snr_db`` with
    ``frame_generator(seed, link_id, sequence)``, as in training.

    Raises:
        WireError: the frame is malformed (maps to an ``INVALID_ARGUMENT`` result).
    """
    num_pilots, rest = divmod(len(frame.pilots), COMPLEX64_BYTES)
    if rest:
        raise WireError(
            f"pilots: {len(frame.pilots)} bytes is not a whole number of complex64 symbols "
            f"({COMPLEX64_BYTES} bytes each)"
        )
    length = frame.num_symbols
    if length < 1:
        raise WireError("num_symbols: a frame must carry at least 1 data symbol, got 0")
    if num_pilots + length > max_symbols:
        raise WireError(
            f"frame of {num_pilots} pilots + {length} symbols exceeds the maximum of "
            f"{max_symbols} symbols"
        )
    if frame.sequence > _MAX_SEQUENCE:
        raise WireError(f"sequence must be < 2**63, got {frame.sequence}")
    pilots = from_wire(frame.pilots, num_pilots, name="pilots")
    symbols = from_wire(frame.symbols, length, name="symbols")
    x = torch.cat([pilots, symbols]).unsqueeze(0)
    params = applied.params
    generator = frame_generator(params.seed, frame.link_id, frame.sequence)
    with torch.no_grad():
        out = applied.channel(x, params.snr_db, generator=generator)
    y = out.y[0]
    sent = frame_pb2.SymbolFrame()
    sent.CopyFrom(frame)
    sent.pilots = to_wire(y[:num_pilots])
    sent.symbols = to_wire(y[num_pilots:])
    state = frame_pb2.ChannelState(
        config_version=applied.version,
        model=params.model,
        snr_db=params.snr_db,
        n0=float(out.n0[0]),
        gains=to_wire(out.h[0]),
        received=out.received[0].to(torch.uint8).numpy().tobytes(),
        frame_lost=bool(out.frame_lost[0]),
    )
    return frame_pb2.ChannelFrame(frame=sent, channel=state)


def _own_result(
    frame: frame_pb2.SymbolFrame,
    fate: frame_pb2.FrameFate,
    *,
    error: str = "",
    channel_version: int = 0,
    channel_model: str = "",
    channel_seconds: float = 0.0,
) -> frame_pb2.FrameResult:
    """A result the emulator answers itself (lost or failed frames)."""
    return frame_pb2.FrameResult(
        link_id=frame.link_id,
        sequence=frame.sequence,
        image_id=frame.image_id,
        fate=fate,
        error=error,
        num_symbols=frame.num_symbols,
        tx_config_version=frame.config_version,
        channel_config_version=channel_version,
        channel_model=channel_model,
        timings=frame_pb2.Timings(
            encode_seconds=frame.encode_seconds, channel_seconds=channel_seconds
        ),
        tx_snr_db=frame.tx_snr_db,
    )


class ChannelEmulatorServicer(services_pb2_grpc.ChannelEmulatorServicer):
    """``rkdsc.v1.ChannelEmulator``: impair, forward to the receiver, relay its results.

    Args:
        settings: the emulator's settings (initial channel = config version 1).
        registry: where the metrics go.
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = ChannelMetrics(registry)
        self.executor = ThreadPoolExecutor(_EXECUTOR_WORKERS, thread_name_prefix="channel")
        self._applied = AppliedChannel.build(settings.channel_params(), 1)
        self._publish()
        self._receiver_channel: Any = None  # grpc.aio.Channel, opened on first use
        self._streams: set[_TransmitStream] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    @property
    def applied(self) -> AppliedChannel:
        """The channel config in force."""
        return self._applied

    @property
    def open_streams(self) -> int:
        """``Transmit`` streams in progress."""
        return len(self._streams)

    def _publish(self) -> None:
        self.metrics.config_version.set(self._applied.version)
        self.metrics.snr_db.set(self._applied.params.snr_db)

    def receiver_channel(self) -> grpc.aio.Channel:
        """The one channel to the receiver, opened on first use."""
        if self._receiver_channel is None:
            self._receiver_channel = open_channel(
                self.settings.receiver_target,
                self.settings.tls,
                # Spread link streams over every receiver a dns:/// target resolves to.
                options=[*channel_options(), ("grpc.lb_policy_name", "round_robin")],
            )
        channel: grpc.aio.Channel = self._receiver_channel
        return channel

    def receiver_stub(self) -> services_pb2_grpc.ReceiverStub:
        """The stub of the receiver, on :meth:`receiver_channel`."""
        return services_pb2_grpc.ReceiverStub(self.receiver_channel())  # type: ignore[no-untyped-call]

    async def GetSettings(
        self, request: services_pb2.GetChannelRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.ChannelSettings:
        return self._applied.params.to_proto(self._applied.version)

    async def SetSettings(
        self, request: services_pb2.ChannelSettings, context: grpc.aio.ServicerContext
    ) -> services_pb2.ChannelSettings:
        try:
            params = ChannelParams.from_proto(request)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid channel settings: {e}")
            raise  # abort raises; never reached
        # One assignment on the event loop: frames impaired from now on see the new config.
        self._applied = AppliedChannel.build(params, self._applied.version + 1)
        self._publish()
        self.metrics.config_changes.inc()
        log.info("channel config v%d: %s", self._applied.version, params)
        return params.to_proto(self._applied.version)

    async def Transmit(
        self,
        request_iterator: AsyncIterator[frame_pb2.SymbolFrame],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[frame_pb2.FrameResult]:
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the channel emulator is stopping")
        stream = _TransmitStream(self)
        self._streams.add(stream)
        self._idle.clear()
        stream.start(request_iterator)
        try:
            while (result := await stream.next_result()) is not None:
                yield result
                stream.release()
        finally:
            self._streams.discard(stream)
            if not self._streams:
                self._idle.set()
            await stream.close()

    async def drain(self, timeout: float) -> None:
        """Stop reading frames, let in-flight frames finish, close the receiver streams.

        Returns when every ``Transmit`` stream has ended or after ``timeout`` seconds.
        """
        self._stopping = True
        for stream in list(self._streams):
            stream.stop_reading()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d transmit streams still open after %.1f s", len(self._streams), timeout)

    async def close(self) -> None:
        """Release the receiver channel and the thread pool (after the server stopped)."""
        if self._receiver_channel is not None:
            await self._receiver_channel.close()
            self._receiver_channel = None
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    """A frame forwarded to the receiver, waiting for its result."""

    frame: frame_pb2.SymbolFrame
    receiver: _ReceiverStream
    timeout: float  # how long the receiver has to answer [s]
    timer: asyncio.TimerHandle | None = None


class _TransmitStream:
    """One ``Transmit`` call: reads at most ``queue_size`` frames ahead of their results."""

    def __init__(self, servicer: ChannelEmulatorServicer) -> None:
        self._servicer = servicer
        self._metrics = servicer.metrics
        self._settings = servicer.settings
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(servicer.settings.queue_size)
        self._out: asyncio.Queue[frame_pb2.FrameResult | None] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._stop_waiter: asyncio.Task[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[tuple[str, int], deque[_Pending]] = {}
        self._receiver: _ReceiverStream | None = None
        self._receivers: list[_ReceiverStream] = []
        self._read = 0
        self._answered = 0
        self._reader_done = False
        self._finished = False
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    def start(self, requests: AsyncIterator[frame_pb2.SymbolFrame]) -> None:
        self._stop_waiter = asyncio.create_task(self._stop.wait())
        self._reader = asyncio.create_task(self._read_frames(requests))

    async def next_result(self) -> frame_pb2.FrameResult | None:
        """The next result to send back; ``None`` once every frame read has been answered."""
        return await self._out.get()

    def release(self) -> None:
        """A result was written back: one more frame may be read."""
        self._slots.release()

    def stop_reading(self) -> None:
        """Read no more frames; the stream ends once the frames read are answered."""
        self._stop.set()

    async def close(self) -> None:
        """Tear down (end of call or cancellation): nothing is answered after this."""
        self._closed = True
        self._metrics.queue_depth.dec(self._read - self._answered)
        self._stop.set()
        tasks = [t for t in (self._reader, self._stop_waiter, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entries in self._pending.values():
            for entry in entries:
                if entry.timer is not None:
                    entry.timer.cancel()
        self._pending.clear()
        # All answered: end the receiver streams cleanly; else (cancelled) abandon them.
        graceful = self._finished
        await asyncio.gather(*(r.close(graceful) for r in self._receivers), return_exceptions=True)

    # ---------------------------------------------------------------- reading

    async def _read_frames(self, requests: AsyncIterator[frame_pb2.SymbolFrame]) -> None:
        it = aiter(requests)
        try:
            while True:
                await self._slots.acquire()
                frame = await self._next_frame(it)
                if frame is None:
                    self._slots.release()
                    return
                self._read += 1
                self._metrics.queue_depth.inc()
                try:
                    await self._handle(frame)
                except Exception as e:  # a bug, not a bad frame: still answer the frame
                    log.exception("handling frame %s/%d failed", frame.link_id, frame.sequence)
                    self._answer_own(frame, f"INTERNAL: {type(e).__name__}: {e}")
        except grpc.aio.AioRpcError as e:  # the transmitter's side of the call broke
            log.info("transmit stream ended: %s", e.code())
        finally:
            self._reader_done = True
            self._maybe_finish()

    async def _next_frame(
        self, it: AsyncIterator[frame_pb2.SymbolFrame]
    ) -> frame_pb2.SymbolFrame | None:
        """The next frame, or ``None`` at the end of the stream or when told to stop."""
        if self._stop.is_set() or self._stop_waiter is None:
            return None
        nxt: asyncio.Future[frame_pb2.SymbolFrame] = asyncio.ensure_future(anext(it))
        try:
            done, _ = await asyncio.wait(
                {nxt, self._stop_waiter}, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            nxt.cancel()
            raise
        if nxt not in done:
            nxt.cancel()
            return None
        try:
            return nxt.result()
        except StopAsyncIteration:
            return None

    async def _handle(self, frame: frame_pb2.SymbolFrame) -> None:
        start = time.perf_counter()
        if self._answer_if_overdue(frame, start, "before the channel emulator reached it"):
            return
        applied = self._servicer.applied  # the config in force when the frame is impaired
        try:
            forwarded = await self._loop.run_in_executor(
                self._servicer.executor,
                impair_frame,
                frame,
                applied,
                self._settings.max_symbols,
            )
        except WireError as e:
            self._answer_own(frame, f"INVALID_ARGUMENT: {e}", start)
            return
        except Exception as e:
            log.exception("impairing frame %s/%d failed", frame.link_id, frame.sequence)
            self._answer_own(frame, f"INTERNAL: {type(e).__name__}: {e}", start)
            return
        finally:
            self._metrics.processing_seconds.observe(time.perf_counter() - start)
        self._metrics.symbols_per_frame.observe(frame.num_symbols)
        if forwarded.channel.frame_lost:
            result = _own_result(
                frame,
                frame_pb2.FRAME_FATE_LOST,
                channel_version=applied.version,
                channel_model=applied.params.model,
                channel_seconds=time.perf_counter() - start,
            )
            self._answer(result, "lost")
        elif applied.params.delay_seconds > 0 or not is_ready(self._servicer.receiver_channel()):
            self._spawn(self._forward_later(forwarded, applied.params.delay_seconds, start))
        else:
            self._forward(forwarded, start)

    # ---------------------------------------------------------------- forwarding

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_later(
        self, forwarded: frame_pb2.ChannelFrame, delay: float, start: float
    ) -> None:
        """Forward after the channel's ``delay`` [s] and once the receiver is reachable.

        A frame is only sent on a connected channel: while the receiver is down (restarting)
        frames wait here, gRPC reconnecting with backoff, and one still waiting after
        ``deadline_seconds`` is answered ``UNAVAILABLE`` without being sent. A frame whose
        expiry comes first is answered ``DEADLINE_EXCEEDED`` at its expiry, not sent.
        """
        frame = forwarded.frame
        left = seconds_left(frame)
        if delay > 0:
            if left is not None and left < delay:  # it expires during the delay
                await asyncio.sleep(max(0.0, left))
                self._answer_expired(frame, "while the channel emulator delayed it", start)
                return
            await asyncio.sleep(delay)
        seconds = self._settings.deadline_seconds
        left = seconds_left(frame)
        wait = seconds if left is None else max(0.0, min(seconds, left))
        waited = time.perf_counter()
        try:
            await asyncio.wait_for(wait_until_ready(self._servicer.receiver_channel()), wait)
        except TimeoutError:
            target = self._settings.receiver_target
            if wait < seconds:
                where = f"while the channel emulator waited for receiver {target}"
                self._answer_expired(frame, where, start)
            else:
                self._answer_own(
                    frame,
                    f"UNAVAILABLE: receiver {target} not reachable within {seconds:g} s; "
                    "the frame was not sent",
                    start,
                )
            return
        self._forward(forwarded, start, deadline=seconds - (time.perf_counter() - waited))

    def _forward(
        self, forwarded: frame_pb2.ChannelFrame, start: float, deadline: float | None = None
    ) -> None:
        """Send ``forwarded`` to the receiver; it is answered within ``deadline`` [s] (default
        ``deadline_seconds``), or by the frame's own expiry if sooner, or expires.

        A frame already past its expiry is answered ``DEADLINE_EXCEEDED`` and not sent.
        """
        if self._closed:
            return
        if self._answer_if_overdue(forwarded.frame, start, "before it left the channel emulator"):
            return
        forwarded.channel.channel_seconds = time.perf_counter() - start
        if self._receiver is None or self._receiver.ended:
            self._receiver = _ReceiverStream(self._servicer.receiver_stub(), self)
            self._receivers.append(self._receiver)
        frame = forwarded.frame
        timeout = self._settings.deadline_seconds if deadline is None else max(0.0, deadline)
        left = seconds_left(frame)
        if left is not None and left < timeout:
            timeout = left  # the transmitter gives up first: so do we
        frame.expires_unix_ns = expiry_after(timeout)  # the receiver skips it after that
        entry = _Pending(frame, self._receiver, timeout)
        key = (frame.link_id, frame.sequence)
        entry.timer = self._loop.call_later(timeout, self._expire, key, entry)
        self._pending.setdefault(key, deque()).append(entry)
        self._receiver.send(forwarded)

    def on_receiver_result(self, result: frame_pb2.FrameResult) -> None:
        """A result from the receiver: relay it to the frame's transmitter."""
        key = (result.link_id, result.sequence)
        entries = self._pending.get(key)
        if not entries:
            # Routine: the frame was answered already (it expired, or its stream broke).
            log.debug("dropping a late receiver result for frame %s/%d", *key)
            return
        entry = entries.popleft()
        if not entries:
            del self._pending[key]
        if entry.timer is not None:
            entry.timer.cancel()
        self._answer(result, "forwarded")

    def on_receiver_end(
        self, receiver: _ReceiverStream, reason: str, code: str = "UNAVAILABLE"
    ) -> None:
        """The receiver stream ended: fail every frame still waiting on it with ``code``."""
        if self._receiver is receiver:
            self._receiver = None
        if receiver in self._receivers:
            self._receivers.remove(receiver)
        target = self._settings.receiver_target
        for key in list(self._pending):
            entries = self._pending[key]
            for entry in [e for e in entries if e.receiver is receiver]:
                entries.remove(entry)
                if entry.timer is not None:
                    entry.timer.cancel()
                self._answer_own(entry.frame, f"{code}: receiver {target}: {reason}")
            if not entries:
                del self._pending[key]

    def _expire(self, key: tuple[str, int], entry: _Pending) -> None:
        entries = self._pending.get(key)
        if not entries or entry not in entries:
            return
        entries.remove(entry)
        if not entries:
            del self._pending[key]
        self._answer_own(
            entry.frame,
            f"DEADLINE_EXCEEDED: receiver {self._settings.receiver_target} did not answer "
            f"within {entry.timeout:.3g} s",
        )

    def _answer_if_overdue(self, frame: frame_pb2.SymbolFrame, start: float, where: str) -> bool:
        """Answer ``frame`` ``DEADLINE_EXCEEDED`` if it has expired; whether it had."""
        left = seconds_left(frame)
        if left is None or left > 0:
            return False
        self._answer_expired(frame, where, start)
        return True

    def _answer_expired(self, frame: frame_pb2.SymbolFrame, where: str, start: float) -> None:
        """Answer ``frame`` ``DEADLINE_EXCEEDED``: it expired ``where``."""
        left = seconds_left(frame)
        self._metrics.frames_expired.inc()
        self._answer_own(frame, expired_error(where, max(0.0, -(left or 0.0))), start)

    # ---------------------------------------------------------------- answering

    def _answer_own(
        self, frame: frame_pb2.SymbolFrame, error: str, start: float | None = None
    ) -> None:
        seconds = 0.0 if start is None else time.perf_counter() - start
        self._answer(
            _own_result(frame, frame_pb2.FRAME_FATE_ERROR, error=error, channel_seconds=seconds),
            "error",
        )

    def _answer(self, result: frame_pb2.FrameResult, fate: str) -> None:
        if self._closed:
            return
        self._answered += 1
        self._metrics.frames.labels(fate).inc()
        self._metrics.queue_depth.dec()
        self._out.put_nowait(result)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._reader_done and not self._finished and self._answered == self._read:
            self._finished = True
            self._out.put_nowait(None)


class _ReceiverStream:
    """One ``Receiver.Decode`` call carrying one transmit stream's frames."""

    def __init__(self, stub: services_pb2_grpc.ReceiverStub, owner: _TransmitStream) -> None:
        self._owner = owner
        self._requests: asyncio.Queue[frame_pb2.ChannelFrame | None] = asyncio.Queue()
        self._call = stub.Decode(self._request_messages())
        self.ended = False
        self._task = asyncio.create_task(self._read_results())

    def send(self, frame: frame_pb2.ChannelFrame) -> None:
        self._requests.put_nowait(frame)

    async def _request_messages(self) -> AsyncIterator[frame_pb2.ChannelFrame]:
        while (frame := await self._requests.get()) is not None:
            yield frame

    async def _read_results(self) -> None:
        reason, code = "closed the stream before answering", "UNAVAILABLE"
        try:
            async for result in self._call:
                self._owner.on_receiver_result(result)
        except grpc.aio.AioRpcError as e:
            reason, code = f"{e.code().name}: {e.details()}", stream_failure_code(e)
        except asyncio.CancelledError:
            reason = "the stream was cancelled"
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            self.ended = True
            self._owner.on_receiver_end(self, reason, code)

    async def close(self, graceful: bool) -> None:
        """End the request side and wait (bounded) for the receiver to finish; or, when not
        ``graceful``, cancel the call at once."""
        if graceful:
            self._requests.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _RECEIVER_CLOSE_SECONDS)
                return
            except TimeoutError:
                log.warning("the receiver did not end its stream; cancelling it")
        self._call.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class ChannelServer(BuiltServer[ChannelEmulatorServicer]):
    """A built (not yet started) channel emulator: the gRPC server and what it serves."""

    service_name = SERVICE_NAME


def build_server(settings: Settings, registry: CollectorRegistry | None = None) -> ChannelServer:
    """Build the emulator's gRPC server on ``settings.host:settings.port`` (bound, not started).

    Call inside the event loop that will run it; ``port=0`` binds a free port.
    """
    registry = registry if registry is not None else CollectorRegistry()
    servicer = ChannelEmulatorServicer(settings, registry)
    server = grpc_server("channel", registry, settings.max_concurrent_rpcs)
    services_pb2_grpc.add_ChannelEmulatorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = enable_health_and_reflection(server, [SERVICE_NAME])
    port = add_port(server, f"{settings.host}:{settings.port}", settings.tls)
    return ChannelServer(server, port, servicer, health_servicer, settings.grace_seconds)


async def serve(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run the emulator until SIGTERM/SIGINT, then NOT_SERVING, drain and stop."""
    built = build_server(settings, registry)
    await built.start()
    applied = built.servicer.applied
    log.info(
        "channel emulator on %s:%d -> receiver %s (config v%d: %s)",
        settings.host,
        built.port,
        settings.receiver_target,
        applied.version,
        applied.params,
    )
    await built.serve_until_signal()
