"""The transmitter's frame path: image -> policy ``L`` -> CAT symbols -> channel link -> result.

Shared by the ``Classify`` stream and by dataset runs. Every image ends as exactly one
``FrameResult`` of fate ``PREDICTED``, ``LOST`` or ``ERROR``; the engine never raises for one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from rkdsc_core.link import LinkBundle
from services.pb import frame_pb2, services_pb2
from services.transmitter.encode import ImageError, UInt8Image, encode_image
from services.transmitter.link import ChannelLink
from services.transmitter.metrics import TransmitterMetrics
from services.transmitter.policy import PolicyStore
from services.transmitter.settings import LINK_ID_PATTERN, Settings

__all__ = ["SNR_RANGE_DB", "LinkError", "TransmitterEngine", "quantize_snr_db"]

log = logging.getLogger(__name__)

SNR_RANGE_DB = (-30.0, 60.0)
"""The SNR the encoder may be conditioned on, Es/N0 [dB] (the CAT encoder's range)."""

_REMEMBERED_LINKS = 4096
"""Closed links whose next sequence number is kept (bounded: link ids come from clients)."""

_FATE_LABEL = {
    frame_pb2.FRAME_FATE_PREDICTED: "predicted",
    frame_pb2.FRAME_FATE_LOST: "lost",
    frame_pb2.FRAME_FATE_ERROR: "error",
}


def quantize_snr_db(snr_db: float) -> float:
    """``snr_db`` rounded to 0.1 dB, clamped to :data:`SNR_RANGE_DB`, as a float32 value.

    The encoder is conditioned on exactly this value, which is also what a ``float`` proto
    field (``tx_snr_db``) holds, so a recorded frame can be re-encoded bit for bit.
    """
    lo, hi = SNR_RANGE_DB
    return float(np.float32(round(min(max(snr_db, lo), hi), 1)))


class LinkError(ValueError):
    """A malformed link id (``INVALID_ARGUMENT``) or one link too many (``RESOURCE_EXHAUSTED``)."""

    def __init__(self, message: str, *, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


class _LinkState:
    """A link's stream, its in-flight slots, its SNR belief and who uses it."""

    def __init__(self, link: ChannelLink, max_in_flight: int, snr_db: float) -> None:
        self.link = link
        self.slots = asyncio.Semaphore(max_in_flight)
        self.snr_belief_db = snr_db
        self.channel_model = ""  # as the last result named it ("": none yet)
        self.in_flight = 0  # frames holding a slot
        self.holders = 0  # runs streaming on the link
        self.last_used = time.monotonic()  # [s], for least-recently-used eviction

    @property
    def idle(self) -> bool:
        """Nothing uses the link: it may be closed to make room for another."""
        return self.in_flight == 0 and self.holders == 0

    @property
    def tx_snr_db(self) -> float:
        return quantize_snr_db(self.snr_belief_db)


class TransmitterEngine:
    """Encodes images on a worker pool and exchanges frames with the channel emulator.

    Usage: ``await engine.acquire(link_id)`` (waits while ``max_in_flight`` frames of the
    link are outstanding), then ``await engine.process(link_id, ...)``, which releases the
    slot when the frame's result is known. A run :meth:`hold` s its link from start to end.

    Links: the default link is always available (opened by its first frame, never closed
    to make room); at most ``max_links`` others are open at once. Opening one more closes
    the least recently used idle link (no frame in flight, not held by a run); with none
    idle, :class:`LinkError` ``RESOURCE_EXHAUSTED``. A link opened again goes on with the
    sequence numbers where it stopped (the emulator seeds its noise by link id and
    sequence), for the last :data:`_REMEMBERED_LINKS` closed ones.

    Args:
        settings: the transmitter's settings.
        bundle: the loaded link (pipeline, classes, eval table).
        policy: the length policy.
        metrics: where frames are counted.
    """

    def __init__(
        self,
        settings: Settings,
        bundle: LinkBundle,
        policy: PolicyStore,
        metrics: TransmitterMetrics,
    ) -> None:
        self.settings = settings
        self.bundle = bundle
        self.policy = policy
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(
            max_workers=settings.encode_workers, thread_name_prefix="tx-encode"
        )
        self.closing = False
        self._links: dict[str, _LinkState] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing_links: set[asyncio.Task[None]] = set()  # links closed to make room
        self._closed_sequences: OrderedDict[str, int] = OrderedDict()  # link id -> next seq

    @property
    def default_link(self) -> str:
        return self.settings.link_id

    @property
    def in_flight(self) -> int:
        """Frames holding a slot (being encoded or awaiting their result), all links."""
        return self._in_flight

    def check_link(self, link_id: str) -> None:
        """Raise :class:`LinkError` unless ``link_id`` is open or may be opened now."""
        self._evictable(link_id)

    def _evictable(self, link_id: str) -> str | None:
        """The link to close before ``link_id`` can be opened (``None``: none needs closing).

        Raises:
            LinkError: ``link_id`` is malformed, or opening it would exceed ``max_links``
                with every other link in use.
        """
        if link_id in self._links or link_id == self.default_link:
            return None
        if not LINK_ID_PATTERN.match(link_id):
            raise LinkError(
                f"link_id must be 1-64 characters of letters, digits, '.', '_', '-'; "
                f"got {link_id!r}"
            )
        others = {k: v for k, v in self._links.items() if k != self.default_link}
        if len(others) < self.settings.max_links:
            return None
        idle = [k for k, v in others.items() if v.idle]
        if not idle:
            raise LinkError(
                f"link_id {link_id!r}: {len(others)} links besides {self.default_link!r} are "
                f"open and in use (RKDSC_TRANSMITTER_MAX_LINKS={self.settings.max_links})",
                code="RESOURCE_EXHAUSTED",
            )
        return min(idle, key=lambda k: others[k].last_used)

    def _state(self, link_id: str) -> _LinkState:
        state = self._links.get(link_id)
        if state is None:
            evict = self._evictable(link_id)
            if evict is not None:
                self._close_link(evict)
            s = self.settings
            link = ChannelLink(
                link_id,
                s.channel_target,
                deadline_seconds=s.deadline_seconds,
                tls=s.tls,
                first_sequence=self._closed_sequences.pop(link_id, 0),
            )
            state = _LinkState(link, s.max_in_flight, s.assumed_snr_db)
            self._links[link_id] = state
            self.metrics.links_open.set(len(self._links))
            self.metrics.snr_estimate_db.labels(link_id).set(state.tx_snr_db)
        state.last_used = time.monotonic()
        return state

    def _close_link(self, link_id: str) -> None:
        """Forget the idle link ``link_id`` and close its stream in the background."""
        state = self._links.pop(link_id)
        self._closed_sequences[link_id] = state.link.next_sequence
        while len(self._closed_sequences) > _REMEMBERED_LINKS:
            self._closed_sequences.popitem(last=False)
        self.metrics.links_open.set(len(self._links))
        self.metrics.snr_estimate_db.remove(link_id)
        self.metrics.links_closed.inc()
        log.info("closing idle link %s to make room for another", link_id)
        task = asyncio.create_task(state.link.close())
        self._closing_links.add(task)
        task.add_done_callback(self._closing_links.discard)

    def hold(self, link_id: str) -> None:
        """Open ``link_id`` if needed and keep it open until :meth:`release_hold`.

        Raises:
            LinkError: as :meth:`check_link`.
        """
        self._state(link_id).holders += 1

    def release_hold(self, link_id: str) -> None:
        """End one :meth:`hold` of ``link_id``."""
        self._links[link_id].holders -= 1

    def tx_snr_db(self, link_id: str) -> float:
        """The SNR the next frame of ``link_id`` will be encoded at [dB]."""
        state = self._links.get(link_id)
        return (
            state.tx_snr_db if state is not None else quantize_snr_db(self.settings.assumed_snr_db)
        )

    def link(self, link_id: str) -> ChannelLink | None:
        """The open link ``link_id``, if any."""
        state = self._links.get(link_id)
        return None if state is None else state.link

    async def acquire(self, link_id: str) -> None:
        """Wait for one of ``link_id``'s ``max_in_flight`` slots (opens the link if new).

        Raises:
            LinkError: ``link_id`` is malformed or would exceed ``max_links``.
        """
        state = self._state(link_id)
        state.in_flight += 1  # counts from here: the link is not idle while we wait
        try:
            await state.slots.acquire()
        except BaseException:
            state.in_flight -= 1
            raise
        self._in_flight += 1
        self._idle.clear()
        self.metrics.in_flight.set(self._in_flight)

    def _release(self, link_id: str) -> None:
        state = self._links[link_id]
        state.slots.release()
        state.in_flight -= 1
        state.last_used = time.monotonic()
        self._in_flight -= 1
        self.metrics.in_flight.set(self._in_flight)
        if self._in_flight == 0:
            self._idle.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the engine keeps a reference to (until it ends)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def reject(self, link_id: str, image_id: str, error: str) -> frame_pb2.FrameResult:
        """Account for an image refused before it got a slot (fate ``ERROR``)."""
        self.metrics.images.inc()
        result = self._base_result(link_id, image_id)
        result.fate = frame_pb2.FRAME_FATE_ERROR
        result.error = error
        self._count(result)
        return result

    def _base_result(self, link_id: str, image_id: str) -> frame_pb2.FrameResult:
        return frame_pb2.FrameResult(
            link_id=link_id,
            image_id=image_id,
            tx_config_version=self.policy.current.version,
            tx_snr_db=self.tx_snr_db(link_id),
        )

    def _count(self, result: frame_pb2.FrameResult) -> None:
        self.metrics.frames.labels(_FATE_LABEL.get(result.fate, "error")).inc()

    async def process(
        self,
        link_id: str,
        image_id: str,
        image: services_pb2.Image | UInt8Image,
        label: int | None = None,
    ) -> frame_pb2.FrameResult:
        """Encode ``image``, send it on ``link_id`` and return its result (slot released).

        ``image`` is a request's image (decoded in the worker) or ``[H, W, C]`` uint8 pixels.
        The result always carries ``link_id``, ``image_id``, ``tx_config_version`` and
        ``tx_snr_db``; for a frame that was sent also ``sequence``, ``num_symbols`` and the
        encode and end-to-end timings.
        """
        try:
            self.metrics.images.inc()
            result = await self._process(link_id, image_id, image, label)
        except Exception as err:  # a bug; the caller still gets its one result
            log.exception("frame %r on link %s failed", image_id, link_id)
            result = self._base_result(link_id, image_id)
            result.fate = frame_pb2.FRAME_FATE_ERROR
            result.error = f"INTERNAL: {type(err).__name__}: {err}"
        finally:
            self._release(link_id)
        self._count(result)
        return result

    async def _process(
        self,
        link_id: str,
        image_id: str,
        image: services_pb2.Image | UInt8Image,
        label: int | None,
    ) -> frame_pb2.FrameResult:
        state = self._links[link_id]
        policy = self.policy.current
        snr_db = state.tx_snr_db
        length = self.policy.choose(snr_db, policy, channel_model=state.channel_model)
        result = self._base_result(link_id, image_id)
        result.tx_config_version = policy.version
        result.tx_snr_db = snr_db
        if self.closing:
            result.fate = frame_pb2.FRAME_FATE_ERROR
            result.error = "UNAVAILABLE: the transmitter is shutting down"
            return result
        s = self.settings
        work = partial(
            encode_image,
            self.bundle.pipeline,
            image,
            snr_db=snr_db,
            length=length,
            max_bytes=s.max_image_bytes,
            max_side=s.max_image_side,
        )
        try:
            encoded = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except ImageError as err:
            result.fate = frame_pb2.FRAME_FATE_ERROR
            result.error = f"INVALID_ARGUMENT: {err}"
            return result
        self.metrics.encode_seconds.observe(encoded.seconds)
        frame = frame_pb2.SymbolFrame(
            link_id=link_id,
            image_id=image_id,
            num_symbols=length,
            symbols=encoded.symbols,
            pilots=encoded.pilots,
            config_version=policy.version,
            sent_unix_ns=time.time_ns(),
            tx_snr_db=snr_db,
            encode_seconds=encoded.seconds,
        )
        if label is not None:
            frame.label = label
        sent = False

        def sent_now() -> None:  # symbols count as sent once gRPC has the frame
            nonlocal sent
            sent = True
            self.metrics.symbols_per_frame.observe(length)
            self.metrics.symbols.inc(length)

        start = time.perf_counter()
        got = await state.link.exchange(frame, on_sent=sent_now)
        elapsed = time.perf_counter() - start
        # The transmitter's own facts win over whatever the far end filled in.
        result.MergeFrom(got)
        result.link_id = link_id
        result.sequence = frame.sequence
        result.image_id = image_id
        result.num_symbols = length if sent else 0  # runs count the frames sent by this
        result.tx_config_version = policy.version
        result.tx_snr_db = snr_db
        result.timings.encode_seconds = encoded.seconds
        result.timings.end_to_end_seconds = elapsed
        if result.fate not in _FATE_LABEL:
            result.fate = frame_pb2.FRAME_FATE_ERROR
            result.error = f"INTERNAL: result without a fate from the channel ({got.error!r})"
        if result.fate != frame_pb2.FRAME_FATE_ERROR:
            self.metrics.end_to_end_seconds.observe(elapsed)
        if result.fate == frame_pb2.FRAME_FATE_PREDICTED:
            self._feedback(link_id, state, result.prediction.estimated_snr_db)
            if result.channel_model:
                state.channel_model = result.channel_model
        return result

    def _feedback(self, link_id: str, state: _LinkState, estimate_db: float) -> None:
        """Fold a receiver's SNR estimate into the link's belief (EWMA)."""
        if not math.isfinite(estimate_db):
            return
        lo, hi = SNR_RANGE_DB
        a = self.settings.snr_smoothing
        belief = (1.0 - a) * state.snr_belief_db + a * min(max(estimate_db, lo), hi)
        state.snr_belief_db = belief
        self.metrics.snr_estimate_db.labels(link_id).set(state.tx_snr_db)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no frame is in flight; whether that happened."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain: %d frames still in flight after %.1f s", self._in_flight, timeout)
            return False
        return True

    async def close(self, timeout: float = 1.0) -> None:
        """Refuse new frames, close every link's stream, stop the worker pool."""
        self.closing = True
        for state in list(self._links.values()):
            await state.link.close(timeout)
        if self._closing_links:  # idle links still closing (each bounded by its own timeout)
            await asyncio.wait(self._closing_links, timeout=timeout + 1.0)
        self.executor.shutdown(wait=False, cancel_futures=True)
