"""Helpers for the channel and receiver tests: frames from the tiny link, references, fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
from prometheus_client import CollectorRegistry
from torch import Tensor

from rkdsc_core.channel import ChannelOutput, frame_generator
from rkdsc_core.link import LinkBundle
from services._wire import to_wire
from services.channel.server import ChannelServer
from services.channel.server import build_server as build_channel
from services.channel.settings import ChannelParams
from services.channel.settings import Settings as ChannelSettings
from services.pb import frame_pb2, services_pb2_grpc
from services.receiver.server import ReceiverServer
from services.receiver.server import build_server as build_receiver
from services.receiver.settings import Settings as ReceiverSettings

LINK_ID = "link-a"


@dataclass(frozen=True)
class SentFrame:
    """A frame on the wire and the transmitter's full frame ``[P + l_max]`` it came from."""

    message: frame_pb2.SymbolFrame
    tx_frame: Tensor
    length: int


_TX_CACHE: dict[tuple[int, int, int, float], Tensor] = {}


def _transmit(link: LinkBundle, count: int, length: int, tx_snr_db: float) -> Tensor:
    """``pipeline.transmit`` of ``count`` fixed random images (cached: the CPU is shared)."""
    key = (id(link.pipeline), count, length, tx_snr_db)
    if key not in _TX_CACHE:
        images = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            _TX_CACHE[key] = link.pipeline.transmit(images, tx_snr_db, length).frame
    return _TX_CACHE[key]


def symbol_frames(
    link: LinkBundle,
    count: int,
    *,
    length: int,
    tx_snr_db: float = 10.0,
    link_id: str = LINK_ID,
    first_sequence: int = 0,
    labels: Iterable[int] | None = None,
) -> list[SentFrame]:
    """``count`` random images through ``pipeline.transmit`` -> ``SymbolFrame`` messages."""
    p = link.pipeline.num_pilots
    tx_frames = _transmit(link, count, length, tx_snr_db)
    label_list = list(labels) if labels is not None else [None] * count
    frames = []
    for i in range(count):
        msg = frame_pb2.SymbolFrame(
            link_id=link_id,
            sequence=first_sequence + i,
            image_id=f"img-{first_sequence + i}",
            num_symbols=length,
            symbols=to_wire(tx_frames[i, p : p + length]),
            pilots=to_wire(tx_frames[i, :p]),
            config_version=3,
            tx_snr_db=tx_snr_db,
            encode_seconds=0.001,
        )
        if label_list[i] is not None:
            msg.label = label_list[i]
        frames.append(SentFrame(msg, tx_frames[i], length))
    return frames


def reference_channel(link: LinkBundle, sent: SentFrame, params: ChannelParams) -> ChannelOutput:
    """The in-process channel for one frame: its ``P + L`` sent symbols through ``Channel``
    with ``frame_generator(seed, link_id, sequence)``."""
    p = link.pipeline.num_pilots
    g = frame_generator(params.seed, sent.message.link_id, sent.message.sequence)
    x = sent.tx_frame[: p + sent.length].unsqueeze(0)
    with torch.no_grad():
        return params.channel()(x, params.snr_db, generator=g)


def reference_decode(
    link: LinkBundle,
    sent: SentFrame,
    params: ChannelParams,
    *,
    knowledge: str = "pilot",
) -> tuple[Tensor, Tensor, ChannelOutput]:
    """The in-process pipeline for one frame: the ``P + L`` sent symbols through
    ``Channel`` with ``frame_generator(seed, link_id, sequence)``, zero-padded to ``l_max``,
    then ``estimate`` and ``receive``. Returns (probabilities ``[C]``, snr estimate, output).
    """
    pipeline = link.pipeline
    pad = max(pipeline.lengths) - sent.length
    out = reference_channel(link, sent, params)
    with torch.no_grad():
        zeros = torch.zeros(1, pad, dtype=torch.complex64)
        full = ChannelOutput(
            torch.cat([out.y, zeros], 1),
            torch.cat([out.h, zeros], 1),
            out.n0,
            torch.cat([out.received, torch.zeros(1, pad, dtype=torch.bool)], 1),
            out.frame_lost,
        )
        csi = pipeline.estimate(knowledge, full)
        logits, _ = pipeline.receive(full.y, full.received, csi)
    return torch.softmax(logits, -1)[0], csi.snr_db[0], out


@dataclass
class FakeReceiver(services_pb2_grpc.ReceiverServicer):
    """A receiver stand-in that keeps every frame and answers PREDICTED (class 0).

    ``hold``: when given, each answer waits for it; ``mute``: never answer.
    """

    hold: asyncio.Event | None = None
    mute: bool = False
    frames: list[frame_pb2.ChannelFrame] = field(default_factory=list)
    streams: int = 0

    async def Decode(
        self, request_iterator: AsyncIterator[frame_pb2.ChannelFrame], context: Any
    ) -> AsyncIterator[frame_pb2.FrameResult]:
        self.streams += 1
        async for cf in request_iterator:
            self.frames.append(cf)
            if self.mute:
                continue
            if self.hold is not None:
                await self.hold.wait()
            f = cf.frame
            yield frame_pb2.FrameResult(
                link_id=f.link_id,
                sequence=f.sequence,
                image_id=f.image_id,
                fate=frame_pb2.FRAME_FATE_PREDICTED,
                num_symbols=f.num_symbols,
                tx_config_version=f.config_version,
                channel_config_version=cf.channel.config_version,
                prediction=frame_pb2.Prediction(channel_snr_db=cf.channel.snr_db),
            )


def register_receiver(fake: FakeReceiver) -> Any:
    """A ``grpc_server`` register callback that serves ``fake`` as ``rkdsc.v1.Receiver``."""

    def register(server: grpc.aio.Server) -> None:
        services_pb2_grpc.add_ReceiverServicer_to_server(fake, server)

    return register


async def transmit(
    stub: services_pb2_grpc.ChannelEmulatorStub,
    frames: Iterable[frame_pb2.SymbolFrame],
    timeout: float = 15.0,
) -> dict[int, frame_pb2.FrameResult]:
    """Send ``frames`` on one ``Transmit`` stream; results keyed by sequence (one each)."""
    results: dict[int, frame_pb2.FrameResult] = {}
    async for r in stub.Transmit(iter(list(frames)), timeout=timeout):
        assert r.sequence not in results, f"two results for frame {r.sequence}"
        results[r.sequence] = r
    return results


@dataclass
class Running:
    """A started server, a client channel to it and its metrics registry."""

    built: Any  # ChannelServer | ReceiverServer
    channel: grpc.aio.Channel
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@asynccontextmanager
async def running_channel(receiver_target: str, **overrides: Any) -> AsyncIterator[Running]:
    """The channel emulator on 127.0.0.1:0 (grace 1 s), stopped gracefully on exit."""
    values: dict[str, Any] = {"port": 0, "receiver_target": receiver_target, "grace_seconds": 1.0}
    registry = CollectorRegistry()
    built: ChannelServer = build_channel(ChannelSettings(**{**values, **overrides}), registry)
    await built.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{built.port}")
    try:
        yield Running(built, channel, registry)
    finally:
        await channel.close()
        await built.stop()


@asynccontextmanager
async def running_receiver(weights_dir: Path, **overrides: Any) -> AsyncIterator[Running]:
    """The receiver on 127.0.0.1:0 with the given weights (grace 1 s)."""
    values: dict[str, Any] = {"port": 0, "weights_dir": weights_dir, "grace_seconds": 1.0}
    registry = CollectorRegistry()
    built: ReceiverServer = build_receiver(ReceiverSettings(**{**values, **overrides}), registry)
    await built.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{built.port}")
    try:
        yield Running(built, channel, registry)
    finally:
        await channel.close()
        await built.stop()
