"""The request side of a link's stream: only frames someone still waits for go out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.pb import frame_pb2
from services.transmitter.link import _CLOSE, _Stream

from ._support import run


class _SilentCall:
    """A ``Transmit`` call that never answers (the reader waits until cancelled)."""

    def __aiter__(self) -> _SilentCall:
        return self

    async def __anext__(self) -> frame_pb2.FrameResult:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    def cancel(self) -> None:
        pass


class _Stub:
    def __init__(self) -> None:
        self.requests: AsyncIterator[frame_pb2.SymbolFrame] | None = None

    def Transmit(self, requests: AsyncIterator[frame_pb2.SymbolFrame]) -> _SilentCall:
        self.requests = requests
        return _SilentCall()


def test_frames_whose_sender_gave_up_are_dropped_unsent() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        stub = _Stub()
        stream = _Stream(stub, "a")  # type: ignore[arg-type]
        sent: list[int] = []
        loop = asyncio.get_running_loop()
        for sequence in range(3):
            frame = frame_pb2.SymbolFrame(sequence=sequence)
            stream.pending[sequence] = loop.create_future()
            stream.queue.put_nowait((frame, lambda s=sequence: sent.append(s)))
        del stream.pending[1]  # frame 1's sender timed out while it waited in the queue
        stream.queue.put_nowait(_CLOSE)
        assert stub.requests is not None
        out = [f.sequence async for f in stub.requests]
        stream.reader.cancel()
        await asyncio.gather(stream.reader, return_exceptions=True)
        return out, sent

    out, sent = run(scenario())
    assert out == [0, 2]
    assert sent == [0, 2]  # symbols count as sent only for frames that went out
