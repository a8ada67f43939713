"""The transmitter gRPC server: ``rkdsc.v1.Transmitter`` on the frame path of the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry

from rkdsc_core.link import load_link
from services._grpc import (
    enable_health_and_reflection,
    grpc_server,
    run_until_signal,
    set_serving,
)
from services._main import StartupError
from services._tls import add_port
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.transmitter.engine import TransmitterEngine
from services.transmitter.metrics import TransmitterMetrics
from services.transmitter.policy import LengthPolicy, Mode, PolicyError, PolicyStore
from services.transmitter.runs import RunError, RunManager
from services.transmitter.settings import Settings

__all__ = [
    "MAX_IMAGE_ID",
    "SERVICE_NAME",
    "TransmitterServer",
    "TransmitterServicer",
    "build_server",
    "serve",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "rkdsc.v1.Transmitter"
"""Full name of the gRPC service (health and reflection)."""

_MODE_ENUM: dict[Mode, services_pb2.LengthPolicy.Mode] = {
    "fixed": services_pb2.LengthPolicy.MODE_FIXED,
    "adaptive": services_pb2.LengthPolicy.MODE_ADAPTIVE,
}
_MODES: dict[int, Mode] = {int(v): k for k, v in _MODE_ENUM.items()}


def policy_to_proto(policy: LengthPolicy) -> services_pb2.LengthPolicy:
    """The domain policy as a ``LengthPolicy`` message."""
    return services_pb2.LengthPolicy(
        mode=_MODE_ENUM[policy.mode],
        fixed_length=policy.fixed_length,
        target_accuracy=policy.target_accuracy,
        version=policy.version,
        confidence=policy.confidence,
    )


def _code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


MAX_IMAGE_ID = 256
"""Longest ``image_id`` a ``Classify`` request may carry [characters]."""


class TransmitterServicer(services_pb2_grpc.TransmitterServicer):
    """``rkdsc.v1.Transmitter``: the client API, the length policy and dataset runs."""

    def __init__(self, engine: TransmitterEngine, runs: RunManager) -> None:
        self.engine = engine
        self.runs = runs

    async def Classify(
        self,
        request_iterator: AsyncIterator[services_pb2.ClassifyRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[frame_pb2.FrameResult]:
        """One result per request, in completion order; bad images give ``ERROR`` results.

        Reading the requests pauses while ``max_in_flight`` images of the stream are being
        processed or have results the client has not read yet (back-pressure reaches the
        client through gRPC flow control: a client that stops reading stops the stream, and
        the results held for it stay bounded). An ``image_id`` longer than
        :data:`MAX_IMAGE_ID` characters is refused (``INVALID_ARGUMENT``).
        """
        engine = self.engine
        link_id = engine.default_link
        out: asyncio.Queue[frame_pb2.FrameResult | None] = asyncio.Queue()
        room = asyncio.Semaphore(engine.settings.max_in_flight)  # accepted, not yet delivered
        in_flight: set[str] = set()
        accepted = 0

        async def one(req: services_pb2.ClassifyRequest) -> None:
            try:
                label = req.label if req.HasField("label") else None
                result = await engine.process(link_id, req.image_id, req.image, label)
            finally:
                in_flight.discard(req.image_id)
            out.put_nowait(result)

        async def feed() -> None:
            nonlocal accepted
            try:
                async for req in request_iterator:
                    await room.acquire()  # released once the client has its result
                    if len(req.image_id) > MAX_IMAGE_ID:
                        accepted += 1
                        out.put_nowait(
                            engine.reject(
                                link_id,
                                req.image_id[:MAX_IMAGE_ID],
                                f"INVALID_ARGUMENT: image_id has {len(req.image_id)} "
                                f"characters; at most {MAX_IMAGE_ID} (the result carries "
                                "its first ones)",
                            )
                        )
                        continue
                    if req.image_id in in_flight:
                        accepted += 1
                        out.put_nowait(
                            engine.reject(
                                link_id,
                                req.image_id,
                                f"INVALID_ARGUMENT: image_id {req.image_id!r} is already in "
                                "flight on this stream; image ids must be unique",
                            )
                        )
                        continue
                    await engine.acquire(link_id)  # the default link: always available
                    accepted += 1
                    in_flight.add(req.image_id)
                    engine.spawn(one(req))
            finally:
                out.put_nowait(None)

        feeder = asyncio.create_task(feed(), name="classify-feed")
        delivered = 0
        reading = True
        try:
            while reading or delivered < accepted:
                item = await out.get()
                if item is None:
                    reading = False
                    continue
                delivered += 1
                yield item
                room.release()
            await feeder  # re-raises a failure reading the requests
        finally:
            if not feeder.done():
                feeder.cancel()

    async def GetPolicy(
        self, request: services_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.LengthPolicy:
        return policy_to_proto(self.engine.policy.current)

    async def SetPolicy(
        self, request: services_pb2.LengthPolicy, context: grpc.aio.ServicerContext
    ) -> services_pb2.LengthPolicy:
        """Replace the policy as a whole (``fixed_length`` 0 = ``l_max``, ``confidence`` unset =
        keep the current one); bumps the version."""
        mode = _MODES.get(request.mode)
        confidence = float(request.confidence) if request.HasField("confidence") else None
        try:
            policy = self.engine.policy.set(
                mode, request.fixed_length or None, float(request.target_accuracy), confidence
            )
        except PolicyError as err:
            await context.abort(_code(err.code), str(err))
        log.info("policy v%d: %s", policy.version, policy)
        self.engine.metrics.set_policy(policy)
        return policy_to_proto(policy)

    async def StartRun(
        self, request: services_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.RunStatus:
        """Start a run and answer at once, the run ``loading`` (see :class:`RunManager`):
        the split is decoded in the run's task, never inside this call and its deadline."""
        try:
            run = self.runs.start(
                request.split, request.num_images, float(request.rate), request.link_id
            )
        except RunError as err:
            await context.abort(_code(err.code), str(err))
        return run.to_proto()

    async def GetRun(
        self, request: services_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.RunStatus:
        try:
            run = self.runs.get(request.run_id)
        except RunError as err:
            await context.abort(_code(err.code), str(err))
        return run.to_proto()


@dataclass
class TransmitterServer:
    """A built (not yet started) transmitter: the gRPC server and what it serves."""

    server: grpc.aio.Server
    port: int
    servicer: TransmitterServicer
    health: health.aio.HealthServicer
    engine: TransmitterEngine
    runs: RunManager
    grace_seconds: float
    _stopped: bool = False

    async def start(self) -> None:
        """Start serving and report SERVING."""
        await self.server.start()
        await set_serving(self.health, [SERVICE_NAME], True)

    async def drain(self) -> None:
        """Stop taking frames, let in-flight frames finish (up to the grace), close links."""
        self.engine.closing = True
        await self.runs.stop()
        await self.engine.drain(self.grace_seconds)
        await self.engine.close()

    async def stop(self) -> None:
        """NOT_SERVING, drain, then stop the server within the grace (once)."""
        if self._stopped:
            return
        self._stopped = True
        await set_serving(self.health, [SERVICE_NAME], False)
        await self.drain()
        await self.server.stop(self.grace_seconds)


def build_server(
    settings: Settings, registry: CollectorRegistry | None = None
) -> TransmitterServer:
    """Load the link, build the engine and the gRPC server (bound, not started).

    Raises:
        FileNotFoundError: no weights at ``settings.weights_dir``.
        StartupError: the initial policy does not fit the loaded link.
    """
    registry = registry if registry is not None else CollectorRegistry()
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    bundle = load_link(settings.weights_dir, device=settings.device)
    lengths = tuple(bundle.pipeline.lengths)
    p = settings.policy
    try:
        policy = PolicyStore(
            lengths,
            bundle.eval_table,
            channel_model=settings.channel_model_hint,
            mode=p.mode,
            fixed_length=p.fixed_length,
            target_accuracy=p.target_accuracy,
            confidence=p.confidence,
        )
    except PolicyError as e:
        raise StartupError(f"RKDSC_TRANSMITTER_POLICY__{e.field.upper()}: {e}") from e
    metrics = TransmitterMetrics(registry, lengths)
    cur = policy.current
    metrics.set_policy(cur)
    engine = TransmitterEngine(settings, bundle, policy, metrics)
    runs = RunManager(engine, settings)
    servicer = TransmitterServicer(engine, runs)
    server = grpc_server("transmitter", registry, settings.max_concurrent_rpcs)
    services_pb2_grpc.add_TransmitterServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = enable_health_and_reflection(server, [SERVICE_NAME])
    port = add_port(server, f"{settings.host}:{settings.port}", settings.tls)
    log.info(
        "transmitter: link %s (L in %s, %d pilots), policy %s, channel at %s",
        bundle.weights_dir,
        list(lengths),
        bundle.pipeline.num_pilots,
        cur,
        settings.channel_target,
    )
    return TransmitterServer(
        server, port, servicer, health_servicer, engine, runs, settings.grace_seconds
    )


async def serve(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then NOT_SERVING, drain in-flight frames and stop."""
    built = build_server(settings, registry)
    await built.start()
    log.info("transmitter listening on %s:%d", settings.host, built.port)
    await run_until_signal(
        built.server,
        built.health,
        [SERVICE_NAME],
        grace_seconds=settings.grace_seconds,
        on_stop=built.drain,
    )
    log.info("transmitter stopped")
