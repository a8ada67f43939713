"""The transmitter's side of a link: one long-lived ``ChannelEmulator.Transmit`` stream.

Frames go out on the stream in sequence order; a reader task matches the returned
``FrameResult`` s to the waiting senders by sequence number. Every frame ends in exactly one
fate, reported once, and nothing is ever resent (so nothing is duplicated):

* a frame is only sent once the connection is up. While the emulator is unreachable
  (restarting, say) frames wait and gRPC reconnects with backoff (0.1 s growing to 1 s, see
  :func:`services._grpc.channel_options`); a frame still waiting at its deadline is answered
  ``ERROR`` ``UNAVAILABLE: ... the frame was not sent``;
* a broken stream (the emulator died or closed it) fails every frame sent on it and still
  unanswered: ``ERROR`` ``UNAVAILABLE: ...``; the next frame opens a new stream;
* a frame sent but not answered within the deadline is answered ``ERROR``
  ``DEADLINE_EXCEEDED: ...``, and its late result, if any, is dropped.
* a frame whose deadline passes while it waits behind others for the stream (a slow
  emulator reads slowly) is answered ``DEADLINE_EXCEEDED`` too, and is never sent.

The deadline counts from :meth:`ChannelLink.exchange` being called, waiting included. Each
frame carries it (``expires_unix_ns``, :mod:`services._deadline`), so the hops downstream drop
a frame nobody waits for any more instead of working on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from services._deadline import expiry_after
from services._grpc import channel_options, is_ready, stream_failure_code, wait_until_ready
from services._tls import TlsSettings, open_channel
from services.pb import frame_pb2, services_pb2_grpc

__all__ = ["ChannelLink", "error_result"]

log = logging.getLogger(__name__)

_CLOSE = None
"""Queue sentinel: half-close the stream."""

_Outgoing = tuple[frame_pb2.SymbolFrame, Callable[[], None] | None]
"""A frame waiting to go out on the stream, and what to call once it does."""


def error_result(frame: frame_pb2.SymbolFrame, error: str) -> frame_pb2.FrameResult:
    """A ``FrameResult`` of fate ``ERROR`` for ``frame`` with message ``error``."""
    return frame_pb2.FrameResult(
        link_id=frame.link_id,
        sequence=frame.sequence,
        image_id=frame.image_id,
        fate=frame_pb2.FRAME_FATE_ERROR,
        error=error,
    )


class _Stream:
    """One ``Transmit`` call: its send queue, the frames awaiting results, its reader."""

    def __init__(self, stub: services_pb2_grpc.ChannelEmulatorStub, link_id: str) -> None:
        self.link_id = link_id
        self.queue: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[frame_pb2.FrameResult]] = {}
        self.broken = False
        self.call = stub.Transmit(self._requests())
        self.reader = asyncio.create_task(self._read(), name=f"link-{link_id}-reader")

    async def _requests(self) -> AsyncIterator[frame_pb2.SymbolFrame]:
        while True:
            item = await self.queue.get()
            if item is _CLOSE:
                return
            frame, on_sent = item
            if frame.sequence not in self.pending:
                # Its sender was answered already (deadline passed, stream failed): do not
                # load a congested emulator with a frame nobody waits for.
                log.debug("link %s: frame %d dropped unsent", self.link_id, frame.sequence)
                continue
            if on_sent is not None:
                on_sent()
            yield frame

    async def _read(self) -> None:
        reason = "UNAVAILABLE: the channel emulator closed the stream"
        try:
            async for result in self.call:
                fut = self.pending.pop(result.sequence, None)
                if fut is None:
                    log.debug("link %s: late or unknown result %d", self.link_id, result.sequence)
                elif not fut.done():
                    fut.set_result(result)
        except grpc.aio.AioRpcError as err:
            reason = (
                f"{stream_failure_code(err)}: channel stream failed "
                f"({err.code().name}: {err.details()})"
            )
            log.warning("link %s: %s", self.link_id, reason)
        except asyncio.CancelledError:
            reason = "UNAVAILABLE: the link was closed"
            raise
        finally:
            self.broken = True
            self.queue.put_nowait(_CLOSE)  # lets the request generator end
            self.fail_pending(reason)

    def fail_pending(self, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(_StreamBroken(reason))

    async def close(self, timeout: float) -> None:
        """Half-close, give the remaining results ``timeout`` seconds, then cancel."""
        self.queue.put_nowait(_CLOSE)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        if not self.reader.done():
            self.call.cancel()
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        self.broken = True


class _StreamBroken(Exception):
    """The stream a frame was sent on failed before its result came back."""


class ChannelLink:
    """Frames of one ``link_id`` to the channel emulator at ``target``, results back.

    Sequence numbers start at ``first_sequence`` and increase by one per frame (across
    reconnects).

    Args:
        link_id: the link's name (in every frame).
        target: ``host:port`` of the channel emulator.
        deadline_seconds: how long a frame waits for its result [s].
        tls: TLS towards the emulator (``None`` or empty: plaintext).
        first_sequence: the sequence number of the first frame (a link reopened after it
            was closed goes on where it stopped, so its channel noise does not repeat).
    """

    def __init__(
        self,
        link_id: str,
        target: str,
        *,
        deadline_seconds: float,
        tls: TlsSettings | None = None,
        first_sequence: int = 0,
    ) -> None:
        self.link_id = link_id
        self.target = target
        self.deadline_seconds = deadline_seconds
        self.tls = tls
        self._next_sequence = first_sequence
        self._channel: grpc.aio.Channel | None = None
        self._stream: _Stream | None = None
        self._closed = False

    def _grpc_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = open_channel(self.target, self.tls, options=channel_options())
        return self._channel

    def _current(self) -> _Stream:
        if self._stream is None or self._stream.broken:
            if self._stream is not None:
                log.info("link %s: reconnecting to %s", self.link_id, self.target)
            stub = services_pb2_grpc.ChannelEmulatorStub(self._grpc_channel())  # type: ignore[no-untyped-call]
            self._stream = _Stream(stub, self.link_id)
        return self._stream

    async def exchange(
        self, frame: frame_pb2.SymbolFrame, on_sent: Callable[[], None] | None = None
    ) -> frame_pb2.FrameResult:
        """Give ``frame`` the next sequence number, send it, and wait for its result.

        Never raises for link trouble: a broken stream or a missing result come back as a
        result of fate ``ERROR`` (``UNAVAILABLE: ...``, ``DEADLINE_EXCEEDED: ...``).
        ``on_sent`` is called when the frame is handed to gRPC to send, so not for a frame
        that was never sent (emulator unreachable, shutting down, or its deadline passed
        while it waited behind other frames: such a frame is dropped unsent).
        """
        if self._closed:
            return error_result(frame, "UNAVAILABLE: the transmitter is shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_seconds
        frame.link_id = self.link_id
        frame.sequence = self._next_sequence
        self._next_sequence += 1
        channel = self._grpc_channel()
        if not is_ready(channel):
            try:
                await asyncio.wait_for(wait_until_ready(channel), self.deadline_seconds)
            except TimeoutError:
                return error_result(
                    frame,
                    f"UNAVAILABLE: channel emulator {self.target} not reachable within "
                    f"{self.deadline_seconds:g} s; the frame was not sent",
                )
            if self._closed:
                return error_result(frame, "UNAVAILABLE: the transmitter is shutting down")
        stream = self._current()
        fut: asyncio.Future[frame_pb2.FrameResult] = loop.create_future()
        stream.pending[frame.sequence] = fut
        frame.expires_unix_ns = expiry_after(deadline - loop.time())  # hops drop it after
        stream.queue.put_nowait((frame, on_sent))
        try:
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return error_result(
                frame,
                f"DEADLINE_EXCEEDED: no result from the channel within {self.deadline_seconds:g} s",
            )
        except _StreamBroken as err:
            return error_result(frame, str(err))
        finally:
            stream.pending.pop(frame.sequence, None)

    @property
    def next_sequence(self) -> int:
        """The sequence number the next frame gets."""
        return self._next_sequence

    async def close(self, timeout: float = 1.0) -> None:
        """Close the stream (waiting up to ``timeout`` s for outstanding results) and channel."""
        self._closed = True
        if self._stream is not None:
            await self._stream.close(timeout)
            self._stream = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
