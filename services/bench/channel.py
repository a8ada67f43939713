"""Benchmark 2: the channel emulator's impairment rate against drawing the noise with numpy.

**system**: what the emulator runs per frame (``services.channel.server.impair_frame``),
less the wire conversion: a generator ``frame_generator(seed, link, sequence)`` and
``Channel(config)(x, snr_db, generator=...)`` under ``torch.no_grad()`` on one frame
``[1, P + L]`` complex64 at a time, in one thread. Its rate counts the complex symbols
impaired per second (each one gets a gain, a noise sample and its received flag).

**baseline**: numpy drawing the same number of complex Gaussian samples (two float32
standard normals each, ``Generator.standard_normal(out=...)`` in blocks of 65,536
symbols), one thread: the raw cost of the noise alone.

Also measured: numpy drawing the same noise frame by frame (the per-call floor of any
frame-by-frame design), the full emulator path (``impair_frame``: wire decoding and
encoding, protobuf), and the channel at several frame sizes, whose linear fit splits the
time per frame into a fixed overhead per call and a cost per symbol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rkdsc_core.channel import Channel, ChannelConfig, frame_generator
from rkdsc_core.link import load_link
from services._wire import to_wire
from services.bench._common import Figure, rate, torch_threads
from services.channel.server import AppliedChannel, impair_frame
from services.channel.settings import ChannelParams
from services.pb import frame_pb2

__all__ = [
    "ChannelBenchConfig",
    "ChannelBenchResult",
    "SizePoint",
    "channel_rate",
    "numpy_frame_rate",
    "numpy_raw_rate",
    "run_channel_bench",
]

LINK_ID = "bench"
NUMPY_BLOCK = 65_536
"""Complex symbols per numpy call of the raw baseline."""


@dataclass(frozen=True)
class ChannelBenchConfig:
    """What the channel benchmark runs.

    Attributes:
        frame_symbols: ``P + L`` per frame (``None``: the link's ``P + l_max``).
        seconds: least time per headline measurement [s].
        sweep: frame sizes [symbols] for the overhead fit.
        sweep_seconds: least time per sweep point [s].
        model: channel model; ``fading``: block or fast; ``snr_db``: Es/N0 [dB].
        weights_dir: the link whose ``P + l_max`` sets the frame size (``None``: shipped).
    """

    frame_symbols: int | None = None
    seconds: float = 5.0
    sweep: tuple[int, ...] = (16, 72, 256, 1024, 4096)
    sweep_seconds: float = 1.5
    model: str = "awgn"
    fading: str = "block"
    snr_db: float = 20.0
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        ChannelConfig(model=self.model, fading=self.fading)  # type: ignore[arg-type]
        if self.frame_symbols is not None and self.frame_symbols < 2:
            raise ValueError(f"frame_symbols must be >= 2, got {self.frame_symbols}")
        if len(self.sweep) < 2 or min(self.sweep) < 2:
            raise ValueError(f"sweep needs >= 2 frame sizes of >= 2 symbols, got {self.sweep}")
        if self.seconds <= 0 or self.sweep_seconds <= 0:
            raise ValueError("seconds and sweep_seconds must be > 0")


@dataclass(frozen=True)
class SizePoint:
    """The channel at one frame size: symbols per frame, time per frame [us], rate [sym/s]."""

    symbols: int
    us_per_frame: float
    symbols_per_s: float


@dataclass(frozen=True)
class ChannelBenchResult:
    """Complex symbols per second, one thread (see the module docstring).

    Attributes:
        frame_symbols: ``P + L`` per frame of the headline figures.
        channel_symbols_per_s: the emulator's ``Channel`` call, frame by frame.
        numpy_raw_symbols_per_s: numpy drawing the same number of complex normals in blocks.
        numpy_frame_symbols_per_s: numpy drawing them frame by frame.
        emulator_symbols_per_s: ``impair_frame`` (wire decoding/encoding included).
        sweep: the channel at several frame sizes.
        overhead_us_per_frame: fixed cost per frame of the linear fit [us].
        ns_per_symbol: cost per symbol of the linear fit [ns].
    """

    config: ChannelBenchConfig
    frame_symbols: int
    channel_symbols_per_s: float
    numpy_raw_symbols_per_s: float
    numpy_frame_symbols_per_s: float
    emulator_symbols_per_s: float
    sweep: list[SizePoint] = field(default_factory=list)
    overhead_us_per_frame: float = 0.0
    ns_per_symbol: float = 0.0

    @property
    def ratio(self) -> float:
        """Channel rate over the raw numpy rate (target >= 0.5)."""
        return self.channel_symbols_per_s / self.numpy_raw_symbols_per_s

    def figures(self) -> list[Figure]:
        m = 1e-6
        n = self.frame_symbols
        largest = max(self.sweep, key=lambda p: p.symbols)
        return [
            Figure(
                "channel impairment rate",
                "Msym/s/core",
                self.channel_symbols_per_s * m,
                self.numpy_raw_symbols_per_s * m,
                target=0.5,
                system_label=f"Channel, frames of {n} symbols",
                baseline_label="numpy complex normals, blocks of 64k",
            ),
            Figure(
                "channel vs numpy, same frames",
                "Msym/s/core",
                self.channel_symbols_per_s * m,
                self.numpy_frame_symbols_per_s * m,
                system_label=f"Channel, frames of {n} symbols",
                baseline_label=f"numpy, frames of {n} symbols",
            ),
            Figure(
                "channel, largest frame",
                "Msym/s/core",
                largest.symbols_per_s * m,
                self.numpy_raw_symbols_per_s * m,
                system_label=f"Channel, frames of {largest.symbols} symbols",
                baseline_label="numpy complex normals, blocks of 64k",
            ),
        ]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"]["weights_dir"] = (
            None if self.config.weights_dir is None else str(self.config.weights_dir)
        )
        out["ratio"] = self.ratio
        return out


def _unit_frame(n: int) -> torch.Tensor:
    """``[1, n]`` complex64 QPSK symbols, Es = 1."""
    bits = torch.randint(0, 2, (1, n, 2), generator=torch.Generator().manual_seed(n))
    return torch.view_as_complex((1.0 - 2.0 * bits.float()) / np.sqrt(2.0)).contiguous()


def _timed_frames(step: Callable[[int], object], min_seconds: float) -> tuple[int, float]:
    """Call ``step(i)`` for i = 0, 1, ... until ``min_seconds`` passed (and >= 20 frames);
    (frames, seconds). The first call is untimed."""
    step(-1)
    frames, start = 0, time.perf_counter()
    while True:
        for _ in range(20):
            step(frames)
            frames += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return frames, elapsed


def channel_rate(
    channel: Channel, n: int, *, snr_db: float, min_seconds: float, seed: int = 0
) -> tuple[float, int]:
    """(symbols/s, frames) of ``channel`` on ``[1, n]`` frames, each with its own frame
    generator, under ``no_grad``, as the emulator applies it."""
    x = _unit_frame(n)

    def step(i: int) -> None:
        channel(x, snr_db, generator=frame_generator(seed, LINK_ID, max(i, 0)))

    with torch.no_grad():
        frames, seconds = _timed_frames(step, min_seconds)
    return frames * n / seconds, frames


def numpy_raw_rate(symbols: int, *, min_seconds: float, seed: int = 0) -> float:
    """Symbols/s of numpy drawing ``symbols`` complex normals (2 float32 each) in blocks of
    :data:`NUMPY_BLOCK`, repeated for at least ``min_seconds``."""
    rng = np.random.default_rng(seed)
    buf = np.empty(2 * NUMPY_BLOCK, dtype=np.float32)

    def draw() -> None:
        left = symbols
        while left > 0:
            k = min(NUMPY_BLOCK, left)
            rng.standard_normal(out=buf[: 2 * k], dtype=np.float32)
            left -= k

    return rate(draw, work=symbols, min_seconds=min_seconds, min_calls=1)


def numpy_frame_rate(n: int, frames: int, *, min_seconds: float, seed: int = 0) -> float:
    """Symbols/s of numpy drawing ``frames`` frames of ``n`` complex normals, one call each."""
    rng = np.random.default_rng(seed)

    def draw() -> None:
        for _ in range(frames):
            rng.standard_normal((n, 2), dtype=np.float32)

    return rate(draw, work=frames * n, min_seconds=min_seconds, min_calls=1)


def _emulator_rate(
    n: int, num_pilots: int, config: ChannelBenchConfig, min_seconds: float
) -> float:
    """Symbols/s of ``impair_frame`` (wire in, channel, wire out, protobuf) on ``n``-symbol
    frames (``num_pilots`` of them pilots)."""
    params = ChannelParams(model=config.model, fading=config.fading, snr_db=config.snr_db)
    applied = AppliedChannel.build(params, 1)
    x = _unit_frame(n)[0]
    frame = frame_pb2.SymbolFrame(
        link_id=LINK_ID,
        image_id="bench",
        num_symbols=n - num_pilots,
        pilots=to_wire(x[:num_pilots]),
        symbols=to_wire(x[num_pilots:]),
    )

    def step(i: int) -> None:
        frame.sequence = max(i, 0)
        impair_frame(frame, applied, max(n, 4096))

    frames, seconds = _timed_frames(step, min_seconds)
    return frames * n / seconds


def run_channel_bench(
    config: ChannelBenchConfig, *, progress: Callable[[str], None] | None = None
) -> ChannelBenchResult:
    """Measure every rate in one thread (see the module docstring)."""
    say = progress or (lambda _msg: None)
    if config.frame_symbols is None:
        pipeline = load_link(config.weights_dir).pipeline
        num_pilots = pipeline.num_pilots
        n = num_pilots + max(pipeline.lengths)
    else:
        n = config.frame_symbols
        num_pilots = min(8, n - 1)
    channel = Channel(ChannelConfig(model=config.model, fading=config.fading))  # type: ignore[arg-type]
    with torch_threads(1):
        say(f"channel: Channel on frames of {n} symbols, {config.seconds:g} s")
        chan, frames = channel_rate(channel, n, snr_db=config.snr_db, min_seconds=config.seconds)
        say("channel: numpy baselines")
        raw = numpy_raw_rate(frames * n, min_seconds=config.seconds / 2)
        per_frame = numpy_frame_rate(n, frames, min_seconds=config.seconds / 2)
        say("channel: the emulator's impair_frame")
        emulator = _emulator_rate(n, num_pilots, config, config.seconds / 2)
        sweep = []
        for size in config.sweep:
            say(f"channel: frames of {size} symbols")
            sym_s, _ = channel_rate(
                channel, size, snr_db=config.snr_db, min_seconds=config.sweep_seconds
            )
            sweep.append(SizePoint(size, 1e6 * size / sym_s, sym_s))
    slope, intercept = np.polyfit(
        [p.symbols for p in sweep], [p.us_per_frame for p in sweep], deg=1
    )
    return ChannelBenchResult(
        config=config,
        frame_symbols=n,
        channel_symbols_per_s=chan,
        numpy_raw_symbols_per_s=raw,
        numpy_frame_symbols_per_s=per_frame,
        emulator_symbols_per_s=emulator,
        sweep=sweep,
        overhead_us_per_frame=float(intercept),
        ns_per_symbol=float(slope) * 1e3,
    )
