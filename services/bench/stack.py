"""Benchmark 1: Classify through the networked stack against the in-process pipeline.

Both sides do the same work per image, one image at a time (batch 1), with the same
weights, the same images and the same channel:

    uint8 pixels -> ``to_tensor`` -> student + CAT encoder (at the SNR the transmitter
    assumes) -> pilots + ``L`` symbols -> ``Channel`` (AWGN, ``snr_db``, the frame's
    generator ``frame_generator(seed, link, sequence)``) on the ``P + L`` symbols sent ->
    LS channel estimate from the pilots -> MMSE equalisation -> CAT decoder + classifier
    head -> softmax.

**in-process** is a loop in this process calling ``SemanticPipeline.forward`` on each
image under ``no_grad`` with ``threads`` torch threads. It includes nothing else: no
serialisation, no sockets, no queues. It uses one core when ``threads`` is 1.

**stack** is what ``rkdsc up`` runs (:meth:`services.stack.Stack.start`): transmitter,
channel emulator, receiver and control plane as four processes on 127.0.0.1 with the same
weights, each torch process limited to ``threads`` intra-op threads. The client runs in
this process (``grpc.aio``): ``streams`` concurrent ``Classify`` streams, each keeping
``window`` images outstanding (a closed loop; raw pixels, ``Image.raw``, so no PNG
decoding on either side). On top of the in-process work every image costs protobuf
encoding and decoding at four hops, six loopback HTTP/2 messages, asyncio scheduling and
thread-pool hand-offs in each service, frame validation and Prometheus metrics; and the
client itself shares the machine. In return the stack may overlap stages of different
images across its processes (encode in the transmitter while the receiver decodes),
which one in-process loop cannot: both sides get the whole machine, and the CPU time per
image (services + client vs this process) shows the cost independently of that overlap.

Latency is measured at the client, from the moment an image is queued to its result:
with ``streams * window`` images in flight (the throughput run, so queueing included) and
with one image in flight (the per-image overhead of the networked path). In-process
latency is the time of one loop iteration.

The timed runs alternate (in-process, stack, then stack, in-process, ...) over
``rounds`` rounds so a drift in background load biases neither side.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch

from rkdsc_core.channel import Channel, ChannelConfig, frame_generator
from rkdsc_core.data import to_tensor
from rkdsc_core.link import SemanticPipeline, load_link
from services._grpc import channel_options
from services.bench._common import Figure, LatencyStats, process_cpu_seconds, torch_threads
from services.bench._images import BenchImages
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.stack import Stack, StackPorts
from services.transmitter.engine import quantize_snr_db

__all__ = [
    "RunSamples",
    "SideResult",
    "StackBenchConfig",
    "StackBenchResult",
    "run_in_process",
    "run_stack_bench",
    "stack_env",
]

log = logging.getLogger(__name__)

LINK_ID = "default"
"""The transmitter's default link, used by ``Classify``."""

_FATES = {
    frame_pb2.FRAME_FATE_PREDICTED: "predicted",
    frame_pb2.FRAME_FATE_LOST: "lost",
    frame_pb2.FRAME_FATE_ERROR: "error",
}


@dataclass(frozen=True)
class StackBenchConfig:
    """What the stack benchmark runs.

    Attributes:
        images: images per side per round (cycled through the image set if it is smaller).
        rounds: timed rounds; each runs both sides, in alternating order.
        warmup: untimed images per side first.
        streams: concurrent ``Classify`` streams of the throughput run.
        window: images each stream keeps outstanding.
        workers: threads of the parallel in-process loop (``None``: one per CPU); the
            faster of the one-thread and the parallel loop is the throughput baseline.
        single_images: images sent one at a time for the unloaded latency.
        length: ``L`` symbols per image (``None``: the link's ``l_max``, the fixed policy's
            default).
        snr_db: the channel's Es/N0 [dB] (AWGN), also the SNR the encoder is conditioned on.
        seed: the channel's noise seed.
        threads: torch intra-op threads per process, both sides (``None``: torch's default).
        weights_dir: the link weights (``None``: the shipped ones).
        ready_timeout: longest wait for the stack to come up [s].
        call_timeout: longest any client run may take [s].
    """

    images: int = 1500
    rounds: int = 2
    warmup: int = 30
    streams: int = 4
    window: int = 2
    workers: int | None = None
    single_images: int = 200
    length: int | None = None
    snr_db: float = 20.0
    seed: int = 0
    threads: int | None = 1
    weights_dir: Path | None = None
    ready_timeout: float = 120.0
    call_timeout: float = 600.0

    def __post_init__(self) -> None:
        for name in ("images", "rounds", "streams", "window", "single_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None (one per CPU), got {self.workers}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None (torch's default), got {self.threads}")
        if not -30.0 <= self.snr_db <= 60.0:
            raise ValueError(f"snr_db must lie in [-30, 60] dB, got {self.snr_db}")


@dataclass(frozen=True)
class SideResult:
    """One side's timed images.

    Attributes:
        images: images timed.
        seconds: wall time they took [s].
        latency: per-image latency.
        cpu_seconds: CPU time spent on them, every process of the side [s] (``None``:
            not measurable here).
        accuracy: fraction classified correctly (a check that both sides did the same work;
            meaningless for synthetic images).
    """

    images: int
    seconds: float
    latency: LatencyStats
    cpu_seconds: float | None
    accuracy: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float | None:
        return None if self.cpu_seconds is None else 1e3 * self.cpu_seconds / self.images

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "images_per_s": self.images_per_s,
            "cpu_ms_per_image": self.cpu_ms_per_image,
        }


@dataclass(frozen=True)
class StackBenchResult:
    """The stack against the in-process pipeline (see the module docstring).

    Attributes:
        config: what ran.
        length: ``L`` per image; ``num_pilots``: ``P``.
        weights: the weights folder.
        in_process: the in-process loop in one thread, all rounds.
        in_process_parallel: the loop in ``workers`` threads (``None`` with one worker).
        stack: the throughput runs (``streams * window`` in flight), all rounds.
        stack_single: one image in flight.
        fates: results by fate, over every stack run.
        stage_ms: medians of the services' own timings over the throughput runs [ms]
            (transmitter encode, channel emulator, receiver decode, transmitter
            send-to-result).
        cpu_ms_by_process: CPU time per image of each stack process and of the client over
            the throughput runs [ms].
    """

    config: StackBenchConfig
    length: int
    num_pilots: int
    weights: str
    in_process: SideResult
    in_process_parallel: SideResult | None
    stack: SideResult
    stack_single: SideResult
    fates: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def baseline_images_per_s(self) -> float:
        """The faster in-process loop (one thread or ``workers`` threads) [images/s]."""
        par = self.in_process_parallel
        return max(self.in_process.images_per_s, 0.0 if par is None else par.images_per_s)

    @property
    def baseline_label(self) -> str:
        par = self.in_process_parallel
        if par is not None and par.images_per_s > self.in_process.images_per_s:
            return f"in-process loop, {self.workers} threads"
        return "in-process loop, 1 thread"

    @property
    def workers(self) -> int:
        return self.config.workers or os.cpu_count() or 1

    @property
    def throughput_ratio(self) -> float:
        """Stack images/s over the faster in-process loop's images/s (target >= 0.8)."""
        return self.stack.images_per_s / self.baseline_images_per_s

    def figures(self) -> list[Figure]:
        c = self.config
        load = f"{c.streams} streams x {c.window} in flight"
        figs = [
            Figure(
                "stack throughput",
                "images/s",
                self.stack.images_per_s,
                self.baseline_images_per_s,
                target=0.8,
                system_label=f"stack, {load}",
                baseline_label=self.baseline_label,
            ),
            Figure(
                "latency p50, 1 in flight",
                "ms",
                self.stack_single.latency.p50_ms,
                self.in_process.latency.p50_ms,
                ratio_of="baseline/system",
                system_label="stack, one image at a time",
                baseline_label="in-process loop, 1 thread",
            ),
            Figure(
                "latency p99, 1 in flight",
                "ms",
                self.stack_single.latency.p99_ms,
                self.in_process.latency.p99_ms,
                ratio_of="baseline/system",
                system_label="stack, one image at a time",
                baseline_label="in-process loop, 1 thread",
            ),
            Figure(
                "latency p50, loaded",
                "ms",
                self.stack.latency.p50_ms,
                self.in_process.latency.p50_ms,
                ratio_of="baseline/system",
                system_label=f"stack, {load}",
                baseline_label="in-process loop, 1 thread",
            ),
            Figure(
                "latency p99, loaded",
                "ms",
                self.stack.latency.p99_ms,
                self.in_process.latency.p99_ms,
                ratio_of="baseline/system",
                system_label=f"stack, {load}",
                baseline_label="in-process loop, 1 thread",
            ),
        ]
        stack_cpu, local_cpu = self.stack.cpu_ms_per_image, self.in_process.cpu_ms_per_image
        if stack_cpu and local_cpu:
            figs.append(
                Figure(
                    "CPU time per image",
                    "ms",
                    stack_cpu,
                    local_cpu,
                    ratio_of="baseline/system",
                    system_label="stack: 4 services + client",
                    baseline_label="in-process loop, 1 thread",
                )
            )
        return figs

    def to_json(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["weights_dir"] = self.weights
        return {
            "config": config,
            "length": self.length,
            "num_pilots": self.num_pilots,
            "in_process": self.in_process.to_json(),
            "in_process_parallel": None
            if self.in_process_parallel is None
            else self.in_process_parallel.to_json(),
            "baseline_images_per_s": self.baseline_images_per_s,
            "stack": self.stack.to_json(),
            "stack_single": self.stack_single.to_json(),
            "throughput_ratio": self.throughput_ratio,
            "fates": self.fates,
            "stage_ms": self.stage_ms,
            "cpu_ms_by_process": self.cpu_ms_by_process,
        }


# --------------------------------------------------------------------------- in-process


@dataclass
class RunSamples:
    """Raw measurements of one timed run of one side."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float | None = 0.0
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    results: list[Any] = field(default_factory=list)

    def add(self, other: RunSamples) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.correct += other.correct
        self.results += other.results
        for name, sec in other.cpu_by_process.items():
            self.cpu_by_process[name] = self.cpu_by_process.get(name, 0.0) + sec
        if self.cpu_seconds is None or other.cpu_seconds is None:
            self.cpu_seconds = None
        else:
            self.cpu_seconds += other.cpu_seconds

    def side(self) -> SideResult:
        n = len(self.latencies)
        return SideResult(
            images=n,
            seconds=self.seconds,
            latency=LatencyStats.from_seconds(self.latencies),
            cpu_seconds=self.cpu_seconds,
            accuracy=self.correct / n,
        )


def run_in_process(
    pipeline: SemanticPipeline,
    images: BenchImages,
    count: int,
    *,
    length: int,
    snr_db: float,
    seed: int = 0,
    first_sequence: int = 0,
    workers: int = 1,
) -> RunSamples:
    """``count`` images (cycling through ``images``) through ``pipeline``, one at a time,
    exactly as the three services process them (see the module docstring).

    With ``workers`` > 1, that many threads of this process share the images (torch
    releases the GIL inside its kernels), so the loop may use several cores as the stack's
    processes do.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    channel = Channel(ChannelConfig(model="awgn"))
    tx_snr_db = quantize_snr_db(snr_db)

    def work(worker: int) -> RunSamples:
        run = RunSamples()
        for i in range(worker, count, workers):
            k = i % len(images)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = pipeline(
                    to_tensor(images.pixels[k : k + 1]),
                    channel,
                    snr_db,
                    length=length,
                    knowledge="pilot",
                    tx_snr_db=tx_snr_db,
                    generator=frame_generator(seed, LINK_ID, first_sequence + i),
                )
                probs = torch.softmax(out.logits, dim=-1)[0]
            index = int(probs.argmax())
            probs.tolist()  # the receiver copies the probabilities into its result
            run.latencies.append(time.perf_counter() - t0)
            run.correct += int(index == int(images.labels[k]))
        return run

    cpu0, start = time.process_time(), time.perf_counter()
    if workers == 1:
        parts = [work(0)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="bench-inproc") as pool:
            parts = list(pool.map(work, range(workers)))
    total = RunSamples(seconds=time.perf_counter() - start, cpu_seconds=None)
    total.cpu_seconds = time.process_time() - cpu0
    for part in parts:
        total.latencies += part.latencies
        total.correct += part.correct
    return total


# --------------------------------------------------------------------------- stack client


def _requests(
    images: BenchImages, count: int, prefix: str, offset: int = 0
) -> list[services_pb2.ClassifyRequest]:
    """``count`` Classify requests with raw pixels, ids ``<prefix>-<i>``."""
    out = []
    for i in range(count):
        k = (offset + i) % len(images)
        px = images.pixels[k]
        h, w, c = px.shape
        out.append(
            services_pb2.ClassifyRequest(
                image_id=f"{prefix}-{i}",
                image=services_pb2.Image(
                    raw=services_pb2.RawImage(height=h, width=w, channels=c, data=px.tobytes())
                ),
                label=int(images.labels[k]),
            )
        )
    return out


async def _one_stream(
    stub: Any,
    requests: Sequence[services_pb2.ClassifyRequest],
    window: int,
    run: RunSamples,
) -> None:
    """One ``Classify`` stream keeping ``window`` images outstanding until all are answered."""
    queue: asyncio.Queue[services_pb2.ClassifyRequest | None] = asyncio.Queue()
    queued_at: dict[str, float] = {}
    pending = iter(requests)

    def push() -> bool:
        req = next(pending, None)
        if req is None:
            return False
        queued_at[req.image_id] = time.perf_counter()
        queue.put_nowait(req)
        return True

    async def messages() -> Any:
        while (req := await queue.get()) is not None:
            yield req

    call = stub.Classify(messages())
    outstanding = sum(push() for _ in range(window))
    if not outstanding:
        queue.put_nowait(None)
    async for result in call:
        now = time.perf_counter()
        run.latencies.append(now - queued_at.pop(result.image_id))
        run.results.append(result)
        run.correct += int(
            result.fate == frame_pb2.FRAME_FATE_PREDICTED and result.prediction.correct
        )
        outstanding -= 1
        if push():
            outstanding += 1
        elif outstanding == 0:
            queue.put_nowait(None)
    if queued_at:
        raise RuntimeError(f"the transmitter ended a Classify stream with {len(queued_at)} open")


async def _closed_loop(
    target: str, streams: Sequence[Sequence[services_pb2.ClassifyRequest]], window: int
) -> RunSamples:
    run = RunSamples()
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        await channel.channel_ready()
        stub = services_pb2_grpc.TransmitterStub(channel)  # type: ignore[no-untyped-call]
        start = time.perf_counter()
        await asyncio.gather(*(_one_stream(stub, reqs, window, run) for reqs in streams))
        run.seconds = time.perf_counter() - start
    return run


def _stack_run(
    stack: Stack,
    images: BenchImages,
    count: int,
    *,
    streams: int,
    window: int,
    tag: str,
    offset: int,
    timeout: float,
) -> RunSamples:
    """``count`` images through the stack, split over ``streams`` streams; CPU time of the
    four services and of this process (the client) included."""
    per_stream = [count // streams + (s < count % streams) for s in range(streams)]
    bounds = list(itertools.accumulate(per_stream, initial=0))
    reqs = [
        _requests(images, n, f"{tag}-s{s}", offset + bounds[s])
        for s, n in enumerate(per_stream)
        if n
    ]
    target = f"{stack.host}:{stack.ports.transmitter}"
    pids = {name: p.pid for name, p in stack.processes.items()}
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    cpu0 = time.process_time()

    async def bounded() -> RunSamples:
        return await asyncio.wait_for(_closed_loop(target, reqs, window), timeout)

    run = asyncio.run(bounded())
    client_cpu = time.process_time() - cpu0
    after = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    parts = {"client": client_cpu}
    for name in pids:
        a, b = after[name], before[name]
        if a is not None and b is not None:
            parts[name] = a - b
    run.cpu_by_process = parts
    run.cpu_seconds = sum(parts.values()) if len(parts) == len(pids) + 1 else None
    if len(run.latencies) != count:
        raise RuntimeError(f"{len(run.latencies)} results for {count} images")
    return run


def stack_env(config: StackBenchConfig, length: int) -> dict[str, str]:
    """Environment for the stack's children: threads, the channel and the fixed policy."""
    env = {
        "RKDSC_CHANNEL_MODEL": "awgn",
        "RKDSC_CHANNEL_SNR_DB": repr(config.snr_db),
        "RKDSC_CHANNEL_SEED": str(config.seed),
        "RKDSC_TRANSMITTER_POLICY__MODE": "fixed",
        "RKDSC_TRANSMITTER_POLICY__FIXED_LENGTH": str(length),
        "RKDSC_TRANSMITTER_ASSUMED_SNR_DB": repr(config.snr_db),
    }
    if config.threads is not None:
        env |= {
            "OMP_NUM_THREADS": str(config.threads),
            "RKDSC_TRANSMITTER_TORCH_THREADS": str(config.threads),
            "RKDSC_RECEIVER_TORCH_THREADS": str(config.threads),
        }
    return env


def _stage_ms(results: Sequence[Any]) -> dict[str, float]:
    stages: dict[str, list[float]] = {
        "encode": [],
        "channel": [],
        "decode": [],
        "transmitter_end_to_end": [],
    }
    for r in results:
        t = r.timings
        stages["encode"].append(t.encode_seconds)
        stages["channel"].append(t.channel_seconds)
        stages["decode"].append(t.decode_seconds)
        stages["transmitter_end_to_end"].append(t.end_to_end_seconds)
    return {k: 1e3 * statistics.median(v) for k, v in stages.items() if v}


def run_stack_bench(
    config: StackBenchConfig,
    images: BenchImages,
    *,
    run_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> StackBenchResult:
    """Start a stack, run both sides (see the module docstring), stop the stack.

    Args:
        run_dir: the stack's logs (default: a temporary folder, removed afterwards).
        progress: called with one line per step.

    Raises:
        services.stack.StackError: the stack did not come up.
        RuntimeError: a Classify stream ended early.
    """
    say = progress or (lambda _msg: None)
    bundle = load_link(config.weights_dir)
    pipeline = bundle.pipeline
    length = config.length if config.length is not None else max(pipeline.lengths)
    if length not in pipeline.lengths:
        raise ValueError(f"length must be one of the link's {list(pipeline.lengths)}, got {length}")
    with tempfile.TemporaryDirectory(prefix="rkdsc-bench-stack-") as tmp:
        logs = run_dir if run_dir is not None else Path(tmp) / "run"
        say(f"stack: starting the services (logs in {logs})")
        with Stack.start(
            ports=StackPorts.free(),
            token_file=Path(tmp) / "control-token",
            weights_dir=config.weights_dir,
            run_dir=logs,
            env=stack_env(config, length),
            ready_timeout=config.ready_timeout,
        ) as stack:
            result = _measure(config, images, stack, pipeline, length, say)
    return StackBenchResult(
        config=config,
        length=length,
        num_pilots=pipeline.num_pilots,
        weights=str(bundle.weights_dir),
        **result,
    )


def _measure(
    config: StackBenchConfig,
    images: BenchImages,
    stack: Stack,
    pipeline: SemanticPipeline,
    length: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    c = config
    workers = c.workers or os.cpu_count() or 1
    sides = ["in-process", "stack"] if workers == 1 else ["in-process", "parallel", "stack"]
    runs = {side: RunSamples() for side in sides}
    sequence = 0  # in-process frames get sequence numbers of their own, as on a link

    def run(side: str, count: int, tag: str) -> RunSamples:
        nonlocal sequence
        if side == "stack":
            streams, window = (c.streams, c.window) if tag != "warm" else (1, 1)
            return _stack_run(
                stack,
                images,
                count,
                streams=streams,
                window=window,
                tag=tag,
                offset=0,
                timeout=c.call_timeout,
            )
        out = run_in_process(
            pipeline,
            images,
            count,
            length=length,
            snr_db=c.snr_db,
            seed=c.seed,
            first_sequence=sequence,
            workers=workers if side == "parallel" else 1,
        )
        sequence += count
        return out

    with torch_threads(c.threads):
        if c.warmup:
            say(f"stack: warm-up, {c.warmup} images per side")
            for side in sides:
                run(side, c.warmup, "warm")
        for r in range(c.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                say(f"stack: round {r + 1}/{c.rounds}, {side}, {c.images} images")
                runs[side].add(run(side, c.images, f"r{r}"))
        say(f"stack: one image in flight, {c.single_images} images")
        single = _stack_run(
            stack,
            images,
            c.single_images,
            streams=1,
            window=1,
            tag="one",
            offset=0,
            timeout=c.call_timeout,
        )
    loaded = runs["stack"]
    fates: dict[str, int] = {}
    for res in (*loaded.results, *single.results):
        name = _FATES.get(res.fate, "error")
        fates[name] = fates.get(name, 0) + 1
    errors = [r.error for r in (*loaded.results, *single.results) if r.error]
    if errors:
        log.warning("%d frames failed in the stack, e.g. %s", len(errors), errors[0])
    return {
        "in_process": runs["in-process"].side(),
        "in_process_parallel": runs["parallel"].side() if "parallel" in runs else None,
        "stack": loaded.side(),
        "stack_single": single.side(),
        "fates": fates,
        "stage_ms": _stage_ms(loaded.results),
        "cpu_ms_by_process": {
            name: 1e3 * sec / len(loaded.latencies) for name, sec in loaded.cpu_by_process.items()
        },
    }
