"""The receiver: CAT decoder + classifier head on the frames the channel emulator delivers.

Each frame is decoded alone (a batch of 1) with :class:`rkdsc_core.link.SemanticPipeline`'s
``estimate`` and ``receive``, so results equal the in-process pipeline run frame by frame.
Inference runs in a one-thread pool, never on the event loop. A frame whose expiry
(``expires_unix_ns``) has passed when its turn comes is answered ``DEADLINE_EXCEEDED``
without inference, so a receiver that falls behind catches up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import torch
from prometheus_client import CollectorRegistry
from torch import Tensor

from rkdsc_core.channel import ChannelKnowledge, ChannelOutput
from rkdsc_core.link import LinkBundle, load_link
from services._deadline import overdue_error
from services._grpc import (
    BuiltServer,
    enable_health_and_reflection,
    grpc_server,
)
from services._tls import add_port
from services._wire import COMPLEX64_BYTES, WireError, from_wire
from services.pb import frame_pb2, services_pb2_grpc
from services.receiver.metrics import ReceiverMetrics
from services.receiver.settings import Settings

__all__ = [
    "SERVICE_NAME",
    "FrameDecoder",
    "ReceiverServer",
    "ReceiverServicer",
    "build_server",
    "serve",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "rkdsc.v1.Receiver"
"""Full name of the gRPC service (also its health-check name)."""


class FrameDecoder:
    """Turns one ``ChannelFrame`` into a ``FrameResult`` (blocking; run it in a thread).

    Args:
        bundle: the loaded link (pipeline in eval mode, class names).
        knowledge: ``pilot`` (LS estimates from the pilot block) or ``perfect`` (the
            channel's true gains and N0 from ``ChannelState``).
        max_symbols: largest ``P + L`` accepted.
    """

    def __init__(
        self, bundle: LinkBundle, knowledge: ChannelKnowledge | str, max_symbols: int
    ) -> None:
        self.pipeline = bundle.pipeline
        self.classes = bundle.classes
        self.knowledge = ChannelKnowledge(knowledge)
        if self.knowledge is ChannelKnowledge.NONE:
            raise ValueError("knowledge must be 'pilot' or 'perfect', got 'none'")
        self.max_symbols = max_symbols
        self.device = self.pipeline.pilots.device
        self.l_max = max(self.pipeline.lengths)
        self._warned_varying_gains = False

    def _inputs(self, cf: frame_pb2.ChannelFrame) -> ChannelOutput:
        """Validate the frame and lay it out as a ``[1, P + l_max]`` channel output.

        Raises:
            WireError: naming the field, for any malformed or unsupported frame.
        """
        frame, state = cf.frame, cf.channel
        p, length = self.pipeline.num_pilots, frame.num_symbols
        if length not in self.pipeline.lengths:
            raise WireError(
                f"num_symbols: L={length} is not one of the link's lengths "
                f"{list(self.pipeline.lengths)}"
            )
        if p + length > self.max_symbols:
            raise WireError(
                f"frame of {p} pilots + {length} symbols exceeds the maximum of "
                f"{self.max_symbols} symbols"
            )
        if len(frame.pilots) != COMPLEX64_BYTES * p:
            raise WireError(
                f"pilots: the link uses {p} pilot symbols = {COMPLEX64_BYTES * p} bytes, "
                f"got {len(frame.pilots)} bytes"
            )
        n = p + length
        pilots = from_wire(frame.pilots, p, name="pilots")
        data = from_wire(frame.symbols, length, name="symbols")
        gains = from_wire(state.gains, n, name="channel.gains")
        if len(state.received) != n:
            raise WireError(
                f"channel.received: expected {n} bytes (one per pilot and data symbol), "
                f"got {len(state.received)} bytes"
            )
        flags = np.frombuffer(state.received, dtype=np.uint8)
        if bool((flags > 1).any()):
            raise WireError("channel.received: every byte must be 0 (erased) or 1 (arrived)")
        n0 = float(state.n0)
        if self.knowledge is ChannelKnowledge.PERFECT and not (np.isfinite(n0) and n0 > 0):
            raise WireError(f"channel.n0 must be finite and > 0 for perfect CSI, got {n0!r}")
        width = p + self.l_max
        y = torch.zeros(1, width, dtype=torch.complex64)
        y[0, :p], y[0, p:n] = pilots, data
        h = torch.zeros(1, width, dtype=torch.complex64)
        h[0, :n] = gains
        received = torch.zeros(1, width, dtype=torch.bool)
        received[0, :n] = torch.from_numpy(flags.astype(np.bool_))
        return ChannelOutput(
            y.to(self.device),
            h.to(self.device),
            torch.tensor([n0], dtype=torch.float32, device=self.device),
            received.to(self.device),
            torch.tensor([state.frame_lost], device=self.device),
        )

    def decode(self, cf: frame_pb2.ChannelFrame) -> frame_pb2.FrameResult:
        """Validate, estimate the CSI and classify one frame (``timings.decode_seconds`` unset).

        Raises:
            WireError: for a malformed frame (maps to an ``INVALID_ARGUMENT`` result).
        """
        out = self._inputs(cf)
        result = _result(cf, frame_pb2.FRAME_FATE_PREDICTED)
        if cf.channel.frame_lost:
            result.fate = frame_pb2.FRAME_FATE_LOST
            return result
        p = self.pipeline.num_pilots
        pilot = self.knowledge is ChannelKnowledge.PILOT
        pilots_in = int(out.received[0, :p].sum())  # pilots that arrived (not erased)
        if pilot and not self._warned_varying_gains:
            self._warn_if_gains_vary(out.h[0, : p + cf.frame.num_symbols])
        if pilot and pilots_in == 0:
            result.fate = frame_pb2.FRAME_FATE_ERROR
            result.error = (
                "DATA_LOSS: every pilot symbol was erased; the channel cannot be estimated"
            )
            return result
        with torch.no_grad():
            csi = self.pipeline.estimate(self.knowledge, out)
            logits, _ = self.pipeline.receive(out.y, out.received, csi)
            probs = torch.softmax(logits, dim=-1)[0].float().cpu()
        index = int(probs.argmax())
        pred = result.prediction
        pred.class_index = index
        pred.class_name = self.classes[index] if index < len(self.classes) else str(index)
        pred.probabilities.extend(probs.tolist())
        # Under 2 pilots (the rest erased) there is no noise estimate, only a placeholder:
        # NaN, so that no one (the adaptive policy, the metrics) averages it in.
        pred.estimated_snr_db = math.nan if pilot and pilots_in < 2 else float(csi.snr_db[0])
        pred.channel_snr_db = cf.channel.snr_db
        pred.channel_knowledge = self.knowledge.value
        if cf.frame.HasField("label"):
            pred.correct = index == cf.frame.label
        return result

    def _warn_if_gains_vary(self, gains: Tensor) -> None:
        """Warn once when a frame's true gains ``[P + L]`` complex64 (side information,
        read only for this check) are not one gain: pilot CSI estimates one gain per
        frame from the pilot block, which fast fading makes meaningless."""
        if bool((gains != gains[0]).any()):
            self._warned_varying_gains = True
            log.warning(
                "pilot CSI assumes one channel gain per frame (block fading), but this "
                "frame's gains vary from symbol to symbol (fast fading?): the receiver's "
                "channel and SNR estimates, and the adaptive length chosen from them, are "
                "wrong; set the channel's fading to block, or run the receiver with "
                "knowledge=perfect (warned once)"
            )


def _result(cf: frame_pb2.ChannelFrame, fate: frame_pb2.FrameFate) -> frame_pb2.FrameResult:
    """A result carrying the frame's identity, versions and upstream timings."""
    frame = cf.frame
    return frame_pb2.FrameResult(
        link_id=frame.link_id,
        sequence=frame.sequence,
        image_id=frame.image_id,
        fate=fate,
        num_symbols=frame.num_symbols,
        tx_config_version=frame.config_version,
        channel_config_version=cf.channel.config_version,
        channel_model=cf.channel.model,
        timings=frame_pb2.Timings(
            encode_seconds=frame.encode_seconds, channel_seconds=cf.channel.channel_seconds
        ),
        tx_snr_db=frame.tx_snr_db,
    )


_FATE_LABELS = {
    frame_pb2.FRAME_FATE_PREDICTED: "predicted",
    frame_pb2.FRAME_FATE_LOST: "lost",
    frame_pb2.FRAME_FATE_ERROR: "error",
}


class ReceiverServicer(services_pb2_grpc.ReceiverServicer):
    """``rkdsc.v1.Receiver``: one result per frame, in arrival order, on the same stream.

    Args:
        decoder: the per-frame decoder (holds the loaded link).
        registry: where the metrics go.
    """

    def __init__(self, decoder: FrameDecoder, registry: CollectorRegistry) -> None:
        self.decoder = decoder
        self.metrics = ReceiverMetrics(registry)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="receiver-inference")
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._active = 0

    async def Decode(
        self,
        request_iterator: AsyncIterator[frame_pb2.ChannelFrame],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[frame_pb2.FrameResult]:
        if self._stop.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver is stopping")
        self._active += 1
        self._idle.clear()
        loop = asyncio.get_running_loop()
        stop_waiter = asyncio.create_task(self._stop.wait())
        it = aiter(request_iterator)
        try:
            while (cf := await _next_or_stop(it, stop_waiter)) is not None:
                start = time.perf_counter()
                overdue = overdue_error(cf.frame, "before the receiver reached it")
                if overdue is not None:  # nobody waits: skip the inference
                    self.metrics.frames_expired.inc()
                    self.metrics.frames.labels("error").inc()
                    result = _error(cf, overdue)
                else:
                    result = await loop.run_in_executor(self.executor, self._decode, cf)
                    result.timings.decode_seconds = time.perf_counter() - start
                    self._record(result)
                yield result
        finally:
            stop_waiter.cancel()
            self._active -= 1
            if not self._active:
                self._idle.set()

    def _decode(self, cf: frame_pb2.ChannelFrame) -> frame_pb2.FrameResult:
        try:
            return self.decoder.decode(cf)
        except WireError as e:
            return _error(cf, f"INVALID_ARGUMENT: {e}")
        except Exception as e:
            log.exception("decoding frame %s/%d failed", cf.frame.link_id, cf.frame.sequence)
            return _error(cf, f"INTERNAL: {type(e).__name__}: {e}")

    def _record(self, result: frame_pb2.FrameResult) -> None:
        m = self.metrics
        m.frames.labels(_FATE_LABELS.get(result.fate, "error")).inc()
        m.decode_seconds.observe(result.timings.decode_seconds)
        if result.fate == frame_pb2.FRAME_FATE_ERROR:
            return
        m.symbols_per_frame.observe(result.num_symbols)
        if result.fate != frame_pb2.FRAME_FATE_PREDICTED:
            return
        pred = result.prediction
        correct = pred.correct if pred.HasField("correct") else None
        m.record_prediction(pred.channel_snr_db, pred.estimated_snr_db, correct)

    async def drain(self, timeout: float) -> None:
        """Read no more frames, finish the ones read, end the streams (within ``timeout``)."""
        self._stop.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d decode streams still open after %.1f s", self._active, timeout)

    async def close(self) -> None:
        """Release the inference thread (after the server stopped)."""
        self.executor.shutdown(wait=False, cancel_futures=True)


def _error(cf: frame_pb2.ChannelFrame, message: str) -> frame_pb2.FrameResult:
    result = _result(cf, frame_pb2.FRAME_FATE_ERROR)
    result.error = message
    return result


async def _next_or_stop(
    it: AsyncIterator[frame_pb2.ChannelFrame], stop_waiter: asyncio.Task[Any]
) -> frame_pb2.ChannelFrame | None:
    """The next frame, or ``None`` at the end of the stream or once ``stop_waiter`` is done."""
    if stop_waiter.done():
        return None
    nxt: asyncio.Future[frame_pb2.ChannelFrame] = asyncio.ensure_future(anext(it))
    try:
        done, _ = await asyncio.wait({nxt, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
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


class ReceiverServer(BuiltServer[ReceiverServicer]):
    """A built (not yet started) receiver: the gRPC server and what it serves."""

    service_name = SERVICE_NAME


def build_server(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    bundle: LinkBundle | None = None,
) -> ReceiverServer:
    """Load the link (unless ``bundle`` is given) and build the server (bound, not started).

    Call inside the event loop that will run it; ``port=0`` binds a free port.

    Raises:
        FileNotFoundError: no weights at ``settings.weights_dir``.
    """
    registry = registry if registry is not None else CollectorRegistry()
    if bundle is None:
        bundle = load_link(settings.weights_dir, device=settings.device)
    decoder = FrameDecoder(bundle, settings.knowledge, settings.max_symbols)
    servicer = ReceiverServicer(decoder, registry)
    server = grpc_server("receiver", registry, settings.max_concurrent_rpcs)
    services_pb2_grpc.add_ReceiverServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = enable_health_and_reflection(server, [SERVICE_NAME])
    port = add_port(server, f"{settings.host}:{settings.port}", settings.tls)
    log.info(
        "receiver: link %s (L in %s, %d pilots, %s CSI)",
        bundle.weights_dir,
        list(bundle.pipeline.lengths),
        bundle.pipeline.num_pilots,
        settings.knowledge,
    )
    return ReceiverServer(server, port, servicer, health_servicer, settings.grace_seconds)


async def serve(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Run the receiver until SIGTERM/SIGINT, then NOT_SERVING, drain and stop."""
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    built = build_server(settings, registry)
    await built.start()
    log.info("receiver serving on %s:%d", settings.host, built.port)
    await built.serve_until_signal()
