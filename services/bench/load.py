"""Benchmark 5: one stack under load, many dataset runs and Classify clients at once.

One real stack (:meth:`services.stack.Stack.start`: transmitter, channel emulator, receiver
and control plane as four processes on 127.0.0.1, the shipped weights unless told
otherwise) gets, all at the same time:

- ``links`` dataset runs (``Transmitter.StartRun``, split ``test``, ``run_images`` images
  each, rate 0 = as fast as possible), each on a link of its own (``load-0``,
  ``load-1``, ...); the transmitter keeps up to ``max_in_flight`` frames in flight per link;
- ``streams`` concurrent ``Classify`` streams on the default link, ``stream_images``
  images each (raw pixels), each keeping ``window`` images outstanding; every
  ``invalid_every``-th of their images is an undecodable file instead.

Before the load the channel is set over the control plane's REST API
(:class:`~services.control.client.ControlClient`) to AWGN with ``frame_loss_prob`` and
``erasure_prob``. So every fate occurs: frames are predicted or lost by the channel (an
erasure only damages symbols), and the undecodable images end as errors
(``INVALID_ARGUMENT``, from the transmitter). The runs stream the dataset the transmitter
reads (``RKDSC_DATA_DIR``); without one, the benchmark's synthetic images, written as an
image-folder tree.

What it reports:

- **throughput**: images of all runs and streams over the wall time from the first
  request to the last run done and the last stream closed, against one ``Classify``
  stream with ``window`` in flight on the idle stack just before (the baseline);
- **fates**: predicted, lost, error (errors by the gRPC status name that starts each), and
  whether they **add up**: every run ends ``done`` with ``predicted + lost + errors ==
  total`` (its ``errors_by_code`` summing to ``errors``), and every ``Classify`` stream
  got exactly one result per image id it sent, with no duplicates and no strangers;
- **latency** of the predicted ``Classify`` frames, ``Timings.end_to_end_seconds`` (from
  the transmitter sending the frame to its result back: the channel emulator, the
  receiver and the four messages between the three, not the wait for the encoder),
  p50/p90/p99 under load against the baseline stream's; and the p99 the client sees
  (queued at the client to the result, the wait for the encoder included);
- **memory**: ``VmRSS`` of the transmitter, channel and receiver processes, sampled every
  ``rss_interval`` seconds in a thread of this process: at the start of the load (after
  a warm-up that loaded the model and the dataset), the peak and the end. "Bounded"
  means the peak is less than ``rss_limit_mib`` above the start: the services' queues
  are bounded, so memory must not grow with the number of frames.

Every wait is bounded (``ready_timeout``, ``call_timeout``, ``result_timeout``); targets
are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from PIL import Image

from rkdsc_core.data import DATASETS
from rkdsc_core.link import default_weights_dir
from services._grpc import channel_options
from services.bench._common import Figure, LatencyStats, process_rss_bytes
from services.bench._images import BenchImages, synthetic_images
from services.control.client import ControlClient
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.stack import Stack, StackPorts

__all__ = [
    "INVALID_IMAGE",
    "MONITORED",
    "LoadBenchConfig",
    "LoadBenchResult",
    "RssSampler",
    "RssStats",
    "RunTally",
    "StreamTally",
    "adds_up",
    "load_env",
    "run_load_bench",
    "write_image_folder",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MONITORED = ("transmitter", "channel", "receiver")
"""The processes whose memory is sampled."""

MIB = 1024 * 1024
WARM_RUN_IMAGES = 10
"""Images of the warm-up run (on the default link): it loads the dataset into the transmitter."""

_FATES = {
    frame_pb2.FRAME_FATE_PREDICTED: "predicted",
    frame_pb2.FRAME_FATE_LOST: "lost",
    frame_pb2.FRAME_FATE_ERROR: "error",
}


@dataclass(frozen=True)
class LoadBenchConfig:
    """What the load benchmark runs.

    Attributes:
        links: dataset runs at once, each on a link of its own (``K``).
        run_images: images per run.
        streams: concurrent ``Classify`` streams on the default link (``M``).
        stream_images: images per stream (``N``).
        window: images each stream keeps outstanding.
        invalid_every: every this many-th image of a load stream is an undecodable file,
            answered with an ``INVALID_ARGUMENT`` error (0: none).
        warmup: untimed ``Classify`` images first (after a warm-up run of
            ``WARM_RUN_IMAGES`` images that loads the dataset).
        baseline_images: images of the baseline: one stream, ``window`` in flight, idle stack.
        frame_loss_prob: the channel's whole-frame loss probability, in [0, 1).
        erasure_prob: the channel's per-symbol erasure probability, in [0, 1).
        snr_db: the channel's Es/N0 [dB] (AWGN), also the SNR the encoder starts from.
        seed: the channel's noise seed.
        rss_interval: time between memory samples [s].
        rss_limit_mib: the growth of a process' RSS (peak over start) that still counts as
            bounded [MiB].
        threads: torch intra-op threads per service process (``None``: torch's default).
        weights_dir: the link weights (``None``: the shipped ones).
        ready_timeout: longest wait for the stack to come up [s].
        call_timeout: longest the warm-up, the baseline or the load may take [s].
        result_timeout: longest a ``Classify`` stream waits for its next result before it
            is given up (recorded as the stream's error, not raised) [s].
    """

    links: int = 8
    run_images: int = 400
    streams: int = 8
    stream_images: int = 150
    window: int = 4
    invalid_every: int = 25
    warmup: int = 20
    baseline_images: int = 200
    frame_loss_prob: float = 0.1
    erasure_prob: float = 0.05
    snr_db: float = 20.0
    seed: int = 0
    rss_interval: float = 0.2
    rss_limit_mib: float = 100.0
    threads: int | None = 1
    weights_dir: Path | None = None
    ready_timeout: float = 120.0
    call_timeout: float = 600.0
    result_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("links", "run_images", "streams", "stream_images", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.links > 255:
            raise ValueError(
                f"links must be <= 255 (the transmitter opens at most 256 links, one of them "
                f"the default), got {self.links}"
            )
        if self.baseline_images < 1:
            raise ValueError(f"baseline_images must be >= 1, got {self.baseline_images}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.invalid_every < 0:
            raise ValueError(f"invalid_every must be >= 0 (0: none), got {self.invalid_every}")
        for name in ("frame_loss_prob", "erasure_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not -30.0 <= self.snr_db <= 60.0:
            raise ValueError(f"snr_db must lie in [-30, 60] dB, got {self.snr_db}")
        for name in ("rss_interval", "rss_limit_mib", "ready_timeout", "call_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.result_timeout > 0:
            raise ValueError(f"result_timeout must be > 0, got {self.result_timeout}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None (torch's default), got {self.threads}")

    @property
    def link_ids(self) -> list[str]:
        """The runs' links."""
        return [f"load-{k}" for k in range(self.links)]


# --------------------------------------------------------------------------- fates


def _error_code(error: str) -> str:
    """The gRPC status name an error starts with (as the transmitter's run report counts)."""
    return error.split(":", 1)[0].strip() or "UNKNOWN"


@dataclass(frozen=True)
class RunTally:
    """One dataset run's final ``RunStatus``.

    Attributes:
        link_id: the run's link.
        run_id: the transmitter's id of the run.
        state: ``done``, ``failed`` (or ``running``, if it never ended).
        total, sent, predicted, lost, errors: the run's counts [images].
        errors_by_code: ``errors`` by the gRPC status name that starts each.
        error: why the run failed, if it did.
        mean_end_to_end_seconds: mean ``Timings.end_to_end_seconds`` of its predicted
            frames [s].
    """

    link_id: str
    run_id: str
    state: str
    total: int
    sent: int
    predicted: int
    lost: int
    errors: int
    errors_by_code: dict[str, int] = field(default_factory=dict)
    error: str = ""
    mean_end_to_end_seconds: float = 0.0

    @classmethod
    def from_status(cls, link_id: str, status: services_pb2.RunStatus) -> RunTally:
        return cls(
            link_id=link_id,
            run_id=status.run_id,
            state=status.state,
            total=status.total,
            sent=status.sent,
            predicted=status.predicted,
            lost=status.lost,
            errors=status.errors,
            errors_by_code=dict(status.errors_by_code),
            error=status.error,
            mean_end_to_end_seconds=status.mean_end_to_end_seconds,
        )

    @property
    def accounted(self) -> int:
        """Images with a fate: ``predicted + lost + errors``."""
        return self.predicted + self.lost + self.errors

    @property
    def adds_up(self) -> bool:
        """The run is done, every image has exactly one fate, and the errors by code sum to
        the errors."""
        return (
            self.state == "done"
            and self.accounted == self.total
            and sum(self.errors_by_code.values()) == self.errors
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "accounted": self.accounted, "adds_up": self.adds_up}


@dataclass(frozen=True)
class StreamTally:
    """One ``Classify`` stream: the image ids it sent against the results it got.

    Attributes:
        name: the stream (its image ids are ``<name>-<i>``).
        images: image ids sent.
        results: results received.
        missing: ids sent that got no result.
        duplicates: results beyond the first for an id.
        unexpected: results for ids never sent.
        fates: results by fate (``predicted``, ``lost``, ``error``).
        errors_by_code: the error results by the gRPC status name that starts each.
        error: the stream's own failure (``CODE: details``), if it ended with one.
    """

    name: str
    images: int
    results: int
    missing: int
    duplicates: int
    unexpected: int
    fates: dict[str, int] = field(default_factory=dict)
    errors_by_code: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def from_results(
        cls,
        name: str,
        image_ids: Sequence[str],
        results: Sequence[frame_pb2.FrameResult],
        error: str = "",
    ) -> StreamTally:
        """Match ``results`` to the ``image_ids`` sent (which must be distinct)."""
        sent = set(image_ids)
        if len(sent) != len(image_ids):
            raise ValueError(f"stream {name}: the image ids sent must be distinct")
        got = Counter(r.image_id for r in results)
        fates: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        for r in results:
            fate = _FATES.get(r.fate, "error")
            fates[fate] += 1
            if fate == "error":
                codes[_error_code(r.error)] += 1
        return cls(
            name=name,
            images=len(image_ids),
            results=len(results),
            missing=sum(1 for i in sent if i not in got),
            duplicates=sum(n - 1 for i, n in got.items() if i in sent),
            unexpected=sum(n for i, n in got.items() if i not in sent),
            fates=dict(fates),
            errors_by_code=dict(codes),
            error=error,
        )

    @property
    def adds_up(self) -> bool:
        """Exactly one result per image id sent, none for another id, no stream failure."""
        return (
            not self.error
            and self.missing == 0
            and self.duplicates == 0
            and self.unexpected == 0
            and self.results == self.images
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "adds_up": self.adds_up}


def adds_up(runs: Iterable[RunTally], streams: Iterable[StreamTally]) -> bool:
    """Whether every run and every stream adds up (see :class:`RunTally`,
    :class:`StreamTally`)."""
    return all(r.adds_up for r in runs) and all(s.adds_up for s in streams)


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class RssStats:
    """One process' resident set size over the load.

    Attributes:
        pid: the process.
        samples: how many samples were taken.
        start_mib: the first sample, as the load starts [MiB].
        peak_mib: the largest sample [MiB].
        end_mib: the last sample, once the load is over [MiB].
    """

    pid: int
    samples: int
    start_mib: float
    peak_mib: float
    end_mib: float

    @property
    def growth_mib(self) -> float:
        """Peak over start [MiB]."""
        return self.peak_mib - self.start_mib

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "growth_mib": self.growth_mib}


class RssSampler:
    """Samples ``VmRSS`` of some processes every ``interval`` seconds in a daemon thread,
    from entering the ``with`` block (first sample) to leaving it (last sample).

    Args:
        pids: the processes by name.
        interval: time between samples [s].
    """

    def __init__(self, pids: Mapping[str, int], interval: float = 0.2) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        self.pids = dict(pids)
        self.interval = interval
        self.samples: dict[str, list[int]] = {name: [] for name in self.pids}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample of every process still there [bytes]."""
        for name, pid in self.pids.items():
            rss = process_rss_bytes(pid)
            if rss is not None:
                self.samples[name].append(rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sample()

    def stats(self) -> dict[str, RssStats]:
        """Start, peak and end of every process sampled at least once."""
        out = {}
        for name, values in self.samples.items():
            if values:
                out[name] = RssStats(
                    pid=self.pids[name],
                    samples=len(values),
                    start_mib=values[0] / MIB,
                    peak_mib=max(values) / MIB,
                    end_mib=values[-1] / MIB,
                )
        return out


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class LoadBenchResult:
    """One stack under load (see the module docstring).

    Attributes:
        config: what ran.
        weights: the weights folder.
        dataset: what the runs streamed.
        seconds: wall time of the load [s].
        runs: every run's final status.
        streams: every ``Classify`` stream's results against its image ids.
        latency: ``end_to_end_seconds`` of the predicted ``Classify`` frames under load.
        client_latency: the same frames from queueing at the client to their result (the
            wait for the encoder included).
        baseline_images: images of the baseline stream.
        baseline_seconds: its wall time [s].
        baseline_latency: ``end_to_end_seconds`` of its predicted frames.
        baseline_client_latency: its predicted frames, queued at the client to result.
        rss: memory of the monitored processes over the load.
        channel: the control plane's channel settings after the load.
    """

    config: LoadBenchConfig
    weights: str
    dataset: str
    seconds: float
    runs: list[RunTally]
    streams: list[StreamTally]
    latency: LatencyStats | None
    client_latency: LatencyStats | None
    baseline_images: int
    baseline_seconds: float
    baseline_latency: LatencyStats | None
    baseline_client_latency: LatencyStats | None = None
    rss: dict[str, RssStats] = field(default_factory=dict)
    channel: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> int:
        """Images of the load: every run's total plus every stream's images."""
        return sum(r.total for r in self.runs) + sum(s.images for s in self.streams)

    @property
    def accounted(self) -> int:
        """Results of the load: runs' ``predicted + lost + errors`` plus streams' results."""
        return sum(r.accounted for r in self.runs) + sum(s.results for s in self.streams)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def baseline_images_per_s(self) -> float:
        return self.baseline_images / self.baseline_seconds

    @property
    def fates(self) -> dict[str, int]:
        """Results by fate, runs and streams together."""
        out: Counter[str] = Counter()
        for r in self.runs:
            out.update(predicted=r.predicted, lost=r.lost, error=r.errors)
        for s in self.streams:
            out.update(s.fates)
        return {name: out[name] for name in ("predicted", "lost", "error")}

    @property
    def errors_by_code(self) -> dict[str, int]:
        """Error results by gRPC status name, runs and streams together."""
        out: Counter[str] = Counter()
        for run in self.runs:
            out.update(run.errors_by_code)
        for stream in self.streams:
            out.update(stream.errors_by_code)
        return dict(sorted(out.items()))

    @property
    def adds_up(self) -> bool:
        """Every run and every stream adds up (see :func:`adds_up`)."""
        return adds_up(self.runs, self.streams)

    @property
    def memory_bounded(self) -> bool | None:
        """Every monitored process grew by less than ``rss_limit_mib`` (``None``: no
        samples, e.g. not Linux)."""
        if not self.rss:
            return None
        return all(r.growth_mib < self.config.rss_limit_mib for r in self.rss.values())

    def figures(self) -> list[Figure]:
        c = self.config
        load = f"{c.links} runs + {c.streams} streams x {c.window} in flight"
        base = f"1 stream x {c.window} in flight, idle stack"
        figs = [
            Figure(
                "load throughput",
                "images/s",
                self.images_per_s,
                self.baseline_images_per_s,
                system_label=load,
                baseline_label=base,
            )
        ]
        if self.accounted > 0:
            figs.append(
                Figure(
                    "results under load",
                    "images",
                    self.accounted,
                    self.images,
                    goal="one fate per image",
                    goal_met=self.adds_up,
                    system_label="fates reported (runs + streams)",
                    baseline_label="images sent",
                )
            )
        lost = self.fates["lost"]
        if lost > 0:  # out of the frames that crossed the channel (not the invalid images)
            figs.append(
                Figure(
                    "frames lost under load",
                    "frames",
                    lost,
                    lost + self.fates["predicted"],
                    system_label="lost by the channel",
                    baseline_label="frames through the channel (predicted + lost), "
                    f"frame_loss_prob {c.frame_loss_prob:g}",
                )
            )
        loaded, idle = self.latency, self.baseline_latency
        if loaded is not None and idle is not None:
            for q in ("p50", "p90", "p99"):
                figs.append(
                    Figure(
                        f"end-to-end latency {q}, under load",
                        "ms",
                        getattr(loaded, f"{q}_ms"),
                        getattr(idle, f"{q}_ms"),
                        ratio_of="baseline/system",
                        system_label=f"Classify frames, {load}",
                        baseline_label=base,
                    )
                )
        loaded, idle = self.client_latency, self.baseline_client_latency
        if loaded is not None and idle is not None:
            figs.append(
                Figure(
                    "client latency p99, under load",
                    "ms",
                    loaded.p99_ms,
                    idle.p99_ms,
                    ratio_of="baseline/system",
                    system_label=f"queued to result, {load}",
                    baseline_label=base,
                )
            )
        for name, r in self.rss.items():
            figs.append(
                Figure(
                    f"{name} RSS",
                    "MiB",
                    r.peak_mib,
                    r.start_mib,
                    goal=f"growth < {c.rss_limit_mib:g} MiB",
                    goal_met=r.growth_mib < c.rss_limit_mib,
                    system_label=f"peak under load, {r.growth_mib:+.1f} MiB",
                    baseline_label="at the start of the load",
                )
            )
        return figs

    def to_json(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["weights_dir"] = self.weights

        def stats(s: LatencyStats | None) -> dict[str, Any] | None:
            return None if s is None else asdict(s)

        return {
            "config": config,
            "dataset": self.dataset,
            "seconds": self.seconds,
            "images": self.images,
            "images_per_s": self.images_per_s,
            "baseline": {
                "images": self.baseline_images,
                "seconds": self.baseline_seconds,
                "images_per_s": self.baseline_images_per_s,
                "latency": stats(self.baseline_latency),
                "client_latency": stats(self.baseline_client_latency),
            },
            "fates": self.fates,
            "errors_by_code": self.errors_by_code,
            "adds_up": self.adds_up,
            "latency": stats(self.latency),
            "client_latency": stats(self.client_latency),
            "rss": {name: r.to_json() for name, r in self.rss.items()},
            "memory_bounded": self.memory_bounded,
            "runs": [r.to_json() for r in self.runs],
            "streams": [s.to_json() for s in self.streams],
            "channel": self.channel,
        }


# --------------------------------------------------------------------------- client


@dataclass
class _Stream:
    """What one ``Classify`` stream sent and got."""

    image_ids: list[str]
    results: list[frame_pb2.FrameResult] = field(default_factory=list)
    client_latencies: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


INVALID_IMAGE = services_pb2.Image(encoded=b"not an image file")
"""What a load stream sends as every ``invalid_every``-th image."""


def _requests(
    images: BenchImages, count: int, prefix: str, offset: int = 0, invalid_every: int = 0
) -> list[services_pb2.ClassifyRequest]:
    """``count`` Classify requests with raw pixels, ids ``<prefix>-<i>``; with
    ``invalid_every`` > 0, every ``invalid_every``-th is :data:`INVALID_IMAGE`."""
    out = []
    for i in range(count):
        k = (offset + i) % len(images)
        px = images.pixels[k]
        h, w, c = px.shape
        raw = services_pb2.RawImage(height=h, width=w, channels=c, data=px.tobytes())
        image = services_pb2.Image(raw=raw)
        if invalid_every and (i + 1) % invalid_every == 0:
            image = INVALID_IMAGE
        out.append(
            services_pb2.ClassifyRequest(
                image_id=f"{prefix}-{i}", image=image, label=int(images.labels[k])
            )
        )
    return out


async def _classify(
    stub: Any,
    requests: Sequence[services_pb2.ClassifyRequest],
    window: int,
    result_timeout: float,
) -> _Stream:
    """One ``Classify`` stream keeping ``window`` images outstanding until every image is
    answered; every result is kept (duplicates and strangers too), a failure recorded."""
    run = _Stream([r.image_id for r in requests])
    queue: asyncio.Queue[services_pb2.ClassifyRequest | None] = asyncio.Queue()
    queued_at: dict[str, float] = {}
    pending = iter(requests)
    closed = False

    def push() -> bool:
        req = next(pending, None)
        if req is None:
            return False
        queued_at[req.image_id] = time.perf_counter()
        queue.put_nowait(req)
        return True

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            queue.put_nowait(None)

    async def messages() -> Any:
        while (req := await queue.get()) is not None:
            yield req

    start = time.perf_counter()
    call = stub.Classify(messages())
    outstanding = sum(push() for _ in range(window))
    if not outstanding:
        close()
    try:
        while True:
            try:
                result = await asyncio.wait_for(call.read(), result_timeout)
            except TimeoutError:
                call.cancel()
                run.error = f"no result for {result_timeout:g} s ({outstanding} outstanding)"
                break
            if result is grpc.aio.EOF:
                break
            now = time.perf_counter()
            sent_at = queued_at.pop(result.image_id, None)
            if sent_at is not None:
                run.client_latencies[result.image_id] = now - sent_at
            run.results.append(result)
            outstanding -= 1
            if push():
                outstanding += 1
            elif outstanding <= 0:
                close()
    except grpc.aio.AioRpcError as err:
        run.error = f"{err.code().name}: {err.details()}"
    run.seconds = time.perf_counter() - start
    return run


async def _wait_run(stub: Any, run_id: str, poll: float = 0.1) -> services_pb2.RunStatus:
    while True:
        status: services_pb2.RunStatus = await stub.GetRun(
            services_pb2.GetRunRequest(run_id=run_id), timeout=10
        )
        if status.state not in ("loading", "running"):  # loading: the split is decoded
            return status
        await asyncio.sleep(poll)


async def _start_run(stub: Any, num_images: int, link_id: str) -> services_pb2.RunStatus:
    request = services_pb2.RunRequest(
        split="test", num_images=num_images, rate=0.0, link_id=link_id
    )
    try:
        status: services_pb2.RunStatus = await stub.StartRun(request, timeout=60)
    except grpc.aio.AioRpcError as err:
        raise RuntimeError(
            f"StartRun on link {link_id or 'default'} failed: {err.code().name}: {err.details()}"
        ) from err
    return status


def _bounded(coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    try:
        return asyncio.run(bounded())
    except TimeoutError as err:
        raise RuntimeError(f"load: {what} not done after {timeout:g} s") from err


async def _with_stub(target: str, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        await channel.channel_ready()
        stub = services_pb2_grpc.TransmitterStub(channel)  # type: ignore[no-untyped-call]
        return await work(stub)


# --------------------------------------------------------------------------- the run


def load_env(config: LoadBenchConfig, cache_dir: Path | None = None) -> dict[str, str]:
    """Environment for the stack's children: threads, the channel, room for ``links`` runs
    on links of their own next to the default link."""
    env = {
        "RKDSC_CHANNEL_MODEL": "awgn",
        "RKDSC_CHANNEL_SNR_DB": repr(config.snr_db),
        "RKDSC_CHANNEL_SEED": str(config.seed),
        "RKDSC_TRANSMITTER_ASSUMED_SNR_DB": repr(config.snr_db),
        "RKDSC_TRANSMITTER_MAX_ACTIVE_RUNS": str(config.links),
        "RKDSC_TRANSMITTER_MAX_LINKS": str(config.links + 1),
    }
    if cache_dir is not None:
        env["RKDSC_TRANSMITTER_CACHE_DIR"] = str(cache_dir)
    if config.threads is not None:
        env |= {
            "OMP_NUM_THREADS": str(config.threads),
            "RKDSC_TRANSMITTER_TORCH_THREADS": str(config.threads),
            "RKDSC_RECEIVER_TORCH_THREADS": str(config.threads),
        }
    return env


def write_image_folder(root: Path, images: BenchImages, classes: Sequence[str]) -> Path:
    """``images`` as a ``root/test/<class>/<i>.png`` tree, image ``i`` in class
    ``i % len(classes)`` (so every class has one when there are enough images)."""
    for i in range(len(images)):
        folder = root / "test" / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images.pixels[i]).save(folder / f"{i}.png")
    return root


def run_load_bench(
    config: LoadBenchConfig,
    images: BenchImages,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    run_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadBenchResult:
    """Start a stack, put it under load (see the module docstring), stop it.

    Args:
        images: the ``Classify`` streams' images (cycled through).
        data_dir: the dataset the runs stream (``None``, or ``images`` synthetic: ``images``
            written as an image-folder tree).
        cache_dir: the transmitter's decoded-dataset cache (``None``: its default).
        run_dir: the stack's logs (default: a temporary folder, removed afterwards).
        progress: called with one line per step.

    Raises:
        services.stack.StackError: the stack did not come up.
        RuntimeError: a run could not start, or a phase took longer than ``call_timeout``.
    """
    say = progress or (lambda _msg: None)
    c = config
    with tempfile.TemporaryDirectory(prefix="rkdsc-bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        if data_dir is not None and not images.synthetic:
            source, dataset = data_dir, f"{data_dir} (test split)"
        else:
            classes = DATASETS["cifar10"].classes
            n = max(c.run_images, WARM_RUN_IMAGES, len(classes))
            source = write_image_folder(tmp / "data", synthetic_images(n, seed=c.seed), classes)
            cache_dir = tmp / "cache"
            dataset = f"SYNTHETIC: {n} smooth random images as an image folder (no dataset)"
        logs = run_dir if run_dir is not None else tmp / "run"
        say(f"load: starting the services (logs in {logs})")
        with Stack.start(
            ports=StackPorts.free(),
            token_file=tmp / "control-token",
            weights_dir=c.weights_dir,
            data_dir=source,
            run_dir=logs,
            env=load_env(c, cache_dir),
            ready_timeout=c.ready_timeout,
        ) as stack:
            measured = _measure(c, images, stack, say)
    weights = c.weights_dir if c.weights_dir is not None else default_weights_dir()
    return LoadBenchResult(config=c, weights=str(weights), dataset=dataset, **measured)


def _measure(
    c: LoadBenchConfig, images: BenchImages, stack: Stack, say: Callable[[str], None]
) -> dict[str, Any]:
    target = f"{stack.host}:{stack.ports.transmitter}"
    with ControlClient(stack.control_url, stack.token, timeout=10) as control:
        control.update_channel(
            model="awgn",
            snr_db=c.snr_db,
            frame_loss_prob=c.frame_loss_prob,
            erasure_prob=c.erasure_prob,
        )

    say(f"load: warm-up, a {WARM_RUN_IMAGES}-image run and {c.warmup} Classify images")

    async def warm_up(stub: Any) -> None:
        started = await _start_run(stub, WARM_RUN_IMAGES, "")
        await _wait_run(stub, started.run_id)
        if c.warmup:
            await _classify(stub, _requests(images, c.warmup, "warm"), c.window, c.result_timeout)

    _bounded(_with_stub(target, warm_up), c.call_timeout, "the warm-up")

    say(f"load: baseline, 1 stream x {c.window} in flight, {c.baseline_images} images")
    base_reqs = _requests(images, c.baseline_images, "base")

    async def baseline(stub: Any) -> _Stream:
        return await _classify(stub, base_reqs, c.window, c.result_timeout)

    base = _bounded(_with_stub(target, baseline), c.call_timeout, "the baseline")
    if base.error or len(base.results) != c.baseline_images:
        raise RuntimeError(
            f"load: the baseline stream got {len(base.results)} results for "
            f"{c.baseline_images} images ({base.error or 'no error'})"
        )

    say(
        f"load: {c.links} runs x {c.run_images} images on links of their own + "
        f"{c.streams} Classify streams x {c.stream_images} images, at once"
    )
    stream_reqs = [
        _requests(
            images,
            c.stream_images,
            f"load-s{s}",
            offset=s * c.stream_images,
            invalid_every=c.invalid_every,
        )
        for s in range(c.streams)
    ]

    async def load(
        stub: Any,
    ) -> tuple[list[services_pb2.RunStatus], list[_Stream], float]:
        start = time.perf_counter()
        streams = asyncio.gather(
            *(_classify(stub, reqs, c.window, c.result_timeout) for reqs in stream_reqs)
        )
        try:
            started = await asyncio.gather(
                *(_start_run(stub, c.run_images, link) for link in c.link_ids)
            )
        except BaseException:
            streams.cancel()
            raise
        finals = await asyncio.gather(*(_wait_run(stub, s.run_id) for s in started))
        done = await streams
        return list(finals), list(done), time.perf_counter() - start

    pids = {name: stack.processes[name].pid for name in MONITORED}
    with RssSampler(pids, c.rss_interval) as rss:
        finals, streams, seconds = _bounded(_with_stub(target, load), c.call_timeout, "the load")
    with ControlClient(stack.control_url, stack.token, timeout=10) as control:
        channel = control.get_channel()

    runs = [RunTally.from_status(link, s) for link, s in zip(c.link_ids, finals, strict=True)]
    tallies = [
        StreamTally.from_results(f"load-s{s}", st.image_ids, st.results, st.error)
        for s, st in enumerate(streams)
    ]
    predicted = [
        r for st in streams for r in st.results if r.fate == frame_pb2.FRAME_FATE_PREDICTED
    ]
    base_predicted = [r for r in base.results if r.fate == frame_pb2.FRAME_FATE_PREDICTED]
    parts: list[RunTally | StreamTally] = [*runs, *tallies]
    for tally in parts:
        if not tally.adds_up:
            log.warning("load: %s does not add up: %s", type(tally).__name__, tally)
    return {
        "seconds": seconds,
        "runs": runs,
        "streams": tallies,
        "latency": _stats([r.timings.end_to_end_seconds for r in predicted]),
        "client_latency": _stats(_client_latencies(streams)),
        "baseline_images": c.baseline_images,
        "baseline_seconds": base.seconds,
        "baseline_latency": _stats([r.timings.end_to_end_seconds for r in base_predicted]),
        "baseline_client_latency": _stats(_client_latencies([base])),
        "rss": rss.stats(),
        "channel": channel,
    }


def _client_latencies(streams: Sequence[_Stream]) -> list[float]:
    """Queued-to-result times of the predicted frames [s]."""
    return [
        st.client_latencies[r.image_id]
        for st in streams
        for r in st.results
        if r.fate == frame_pb2.FRAME_FATE_PREDICTED and r.image_id in st.client_latencies
    ]


def _stats(seconds: Sequence[float]) -> LatencyStats | None:
    return LatencyStats.from_seconds(seconds) if seconds else None
