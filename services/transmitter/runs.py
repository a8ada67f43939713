"""Dataset runs: stream ``N`` images of a split through the link at a target rate.

The ``N`` images are ``ImageDataset.sample(N)`` (a fixed seeded sample, the same one
evaluation uses), each sent with its label as image id ``<split>/<position in the sample>``.

``StartRun`` answers at once: the run starts ``loading`` (its split being decoded, which
takes seconds on a cold cache, longer than a client's deadline), then goes ``running``
(streaming) and ends ``done`` or ``failed`` (reason in ``error``). Concurrent runs of one
split share one load, and a loaded split is kept for later runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from rkdsc_core.config import load_settings
from rkdsc_core.data import SPLITS, ImageDataset, Split, load_dataset
from services._metrics import snr_bin
from services.pb import frame_pb2, services_pb2
from services.transmitter.engine import LinkError, TransmitterEngine
from services.transmitter.settings import Settings

__all__ = ["ACTIVE_STATES", "Run", "RunError", "RunManager"]

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset({"loading", "running"})
"""States of a run that has not finished: ``loading`` (its split is being decoded and
sampled, nothing sent yet) and ``running`` (streaming); the others are ``done``, ``failed``."""


class RunError(Exception):
    """A run request that cannot be served; ``code`` is the gRPC status name it maps to."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Run:
    """One run's progress (what ``GetRun`` reports)."""

    run_id: str
    split: str
    link_id: str
    total: int
    rate: float
    state: str = "loading"
    """``loading`` -> ``running`` -> ``done``; or ``failed`` from either, with ``error``."""
    sent: int = 0
    predicted: int = 0
    lost: int = 0
    errors: int = 0
    correct: int = 0
    symbols: int = 0
    end_to_end_seconds: float = 0.0
    error: str = ""
    errors_by_code: dict[str, int] = field(default_factory=dict)
    """``errors`` by the status name each error starts with (``UNAVAILABLE``, ...)."""
    per_snr: dict[str, list[int]] = field(default_factory=dict)
    """``{snr bin label: [predicted, correct]}`` over the SNR the channel applied."""

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    def fail(self, error: str) -> None:
        """End the run ``failed`` with ``error`` (the reason ``GetRun`` reports)."""
        self.state = "failed"
        self.error = error

    def record(self, result: frame_pb2.FrameResult, label: int) -> None:
        """Count one frame's result."""
        if result.num_symbols > 0:
            self.sent += 1
            self.symbols += result.num_symbols
        if result.fate == frame_pb2.FRAME_FATE_PREDICTED:
            pred = result.prediction
            ok = pred.correct if pred.HasField("correct") else pred.class_index == label
            self.predicted += 1
            self.correct += int(ok)
            self.end_to_end_seconds += result.timings.end_to_end_seconds
            counts = self.per_snr.setdefault(snr_bin(pred.channel_snr_db), [0, 0])
            counts[0] += 1
            counts[1] += int(ok)
        elif result.fate == frame_pb2.FRAME_FATE_LOST:
            self.lost += 1
        else:
            self.errors += 1
            code = result.error.split(":", 1)[0].strip() or "UNKNOWN"
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def to_proto(self) -> services_pb2.RunStatus:
        bins = []
        for key, (pred, corr) in self.per_snr.items():
            centre = float(key) if key != "nan" else math.nan
            bins.append(
                services_pb2.SnrBinStats(
                    snr_db=centre, predicted=pred, correct=corr, accuracy=corr / pred
                )
            )
        bins.sort(key=lambda b: (math.isnan(b.snr_db), b.snr_db))
        return services_pb2.RunStatus(
            run_id=self.run_id,
            state=self.state,
            total=self.total,
            sent=self.sent,
            predicted=self.predicted,
            lost=self.lost,
            errors=self.errors,
            correct=self.correct,
            accuracy=self.correct / self.predicted if self.predicted else 0.0,
            symbols_per_image=self.symbols / self.sent if self.sent else 0.0,
            per_snr=bins,
            error=self.error,
            mean_end_to_end_seconds=(
                self.end_to_end_seconds / self.predicted if self.predicted else 0.0
            ),
            errors_by_code=self.errors_by_code,
        )


class RunManager:
    """Starts runs as background tasks and keeps their status (the last ``max_runs``).

    Args:
        engine: the frame path the runs' images take.
        settings: dataset name, source and cache, limits.
    """

    def __init__(self, engine: TransmitterEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._datasets: dict[str, ImageDataset] = {}
        self._loads: dict[str, asyncio.Task[ImageDataset]] = {}
        """The split loads in progress, shared by the runs that wait for them."""
        self._stopping = False

    def get(self, run_id: str) -> Run:
        """The run ``run_id``.

        Raises:
            RunError: ``NOT_FOUND`` (unknown, or dropped from the history).
        """
        run = self._runs.get(run_id)
        if run is None:
            raise RunError(
                "NOT_FOUND",
                f"no run {run_id!r} (unknown, or older than the last {self.settings.max_runs})",
            )
        return run

    def start(self, split: str, num_images: int, rate: float, link_id: str) -> Run:
        """Validate the request, hold the link and start the run's task; returns at once.

        The run starts ``loading``: its task loads the split (once: concurrent runs of a
        split share the load, and a loaded split is cached), samples ``num_images`` of it,
        then streams them (``running``). A split that cannot be loaded, or that has fewer
        than ``num_images`` images, ends the run ``failed`` with the reason in ``error``
        (``FAILED_PRECONDITION: ...``, ``INVALID_ARGUMENT: ...``). Once the split is cached,
        too many images is refused here instead.

        Raises:
            RunError: ``INVALID_ARGUMENT`` (split, num_images, rate, link_id),
                ``RESOURCE_EXHAUSTED`` (too many active runs or links), ``UNAVAILABLE``
                (shutting down).
        """
        if split not in SPLITS:
            raise RunError(
                "INVALID_ARGUMENT", f"split must be one of {', '.join(SPLITS)}; got {split!r}"
            )
        if num_images < 1:
            raise RunError("INVALID_ARGUMENT", f"num_images must be at least 1; got {num_images}")
        if not (math.isfinite(rate) and rate >= 0.0):
            raise RunError(
                "INVALID_ARGUMENT",
                f"rate must be >= 0 images/s (0 = as fast as possible); got {rate}",
            )
        link_id = link_id or self.engine.default_link
        try:
            self.engine.check_link(link_id)
        except LinkError as err:
            raise RunError(err.code, str(err)) from err
        if self._stopping or self.engine.closing:
            raise RunError("UNAVAILABLE", "the transmitter is shutting down")
        active = sum(1 for r in self._runs.values() if not r.finished)
        if active >= self.settings.max_active_runs:
            raise RunError(
                "RESOURCE_EXHAUSTED",
                f"{active} runs are active (RKDSC_TRANSMITTER_MAX_ACTIVE_RUNS="
                f"{self.settings.max_active_runs}); wait for one to finish",
            )
        cached = self._datasets.get(split)
        if cached is not None:
            self._check_size(cached, split, num_images)
        try:  # last: a refused run closes no idle link (one failing as it loads may)
            self.engine.hold(link_id)
        except LinkError as err:
            raise RunError(err.code, str(err)) from err
        run = Run(uuid.uuid4().hex[:16], split, link_id, num_images, float(rate))
        self._runs[run.run_id] = run
        task = asyncio.create_task(self._run(run), name=f"run-{run.run_id}")
        # A callback, not a finally: a task cancelled before it starts runs no finally.
        task.add_done_callback(partial(self._finish, run))
        self._tasks[run.run_id] = task
        log.info(
            "run %s: %d %s images at %s img/s on link %s",
            run.run_id,
            num_images,
            split,
            rate or "max",
            link_id,
        )
        return run

    async def _run(self, run: Run) -> None:
        """Load the split, sample the run's images, stream them; the outcome goes in ``run``."""
        try:
            dataset = await self._dataset(run.split)
            self._check_size(dataset, run.split, run.total)
            # A fixed seeded sample, not the first N: sources are often sorted by class.
            images = await asyncio.to_thread(dataset.sample, run.total)
            run.state = "running"
            await self._stream(run, images)
            run.state = "done"
        except RunError as err:
            log.warning("run %s failed: %s: %s", run.run_id, err.code, err)
            run.fail(f"{err.code}: {err}")
        except asyncio.CancelledError:
            run.fail("cancelled: the transmitter is shutting down")
        except Exception as err:
            log.exception("run %s failed", run.run_id)
            run.fail(f"{type(err).__name__}: {err}")

    def _finish(self, run: Run, task: asyncio.Task[None]) -> None:
        """Done callback of a run's task: release its link, forget the task, prune history."""
        self.engine.release_hold(run.link_id)
        if not run.finished:  # cancelled before it started
            run.fail("cancelled: the transmitter is shutting down")
        self._tasks.pop(run.run_id, None)
        self._prune()
        log.info("run %s %s: %d/%d correct", run.run_id, run.state, run.correct, run.predicted)

    def _check_size(self, dataset: ImageDataset, split: str, num_images: int) -> None:
        if num_images > len(dataset):
            raise RunError(
                "INVALID_ARGUMENT",
                f"num_images={num_images} exceeds the {len(dataset)} images of "
                f"{dataset.name} {split}",
            )

    async def _dataset(self, split: str) -> ImageDataset:
        """The split, loaded once per transmitter.

        Runs that need a split being loaded wait for that same load: a waiter that is
        cancelled does not cancel it for the others. A failed load is not kept, so the next
        run tries again.

        Raises:
            RunError: ``FAILED_PRECONDITION`` (no dataset, or its classes differ from the
                link's).
        """
        cached = self._datasets.get(split)
        if cached is not None:
            return cached
        load = self._loads.get(split)
        if load is None:
            load = asyncio.create_task(self._load_checked(split), name=f"load-{split}")
            self._loads[split] = load
            load.add_done_callback(partial(self._load_done, split))
        return await asyncio.shield(load)

    def _load_done(self, split: str, task: asyncio.Task[ImageDataset]) -> None:
        if self._loads.get(split) is task:
            del self._loads[split]
        if not task.cancelled() and task.exception() is None:  # retrieved: no asyncio warning
            self._datasets[split] = task.result()

    async def _load_checked(self, split: str) -> ImageDataset:
        log.info("loading %s %s", self.settings.dataset, split)
        try:
            dataset = await asyncio.to_thread(self._load, split)
        except ValueError as err:  # DataSourceError, or a bad rkdsc setting
            raise RunError("FAILED_PRECONDITION", str(err)) from err
        if tuple(dataset.classes) != tuple(self.engine.bundle.classes):
            raise RunError(
                "FAILED_PRECONDITION",
                f"dataset {dataset.name} has classes {list(dataset.classes)[:4]}..., but the "
                f"link was trained on {list(self.engine.bundle.classes)[:4]}...; set "
                "RKDSC_TRANSMITTER_DATASET to the link's dataset",
            )
        log.info("loaded %s %s: %d images", dataset.name, split, len(dataset))
        return dataset

    def _load(self, split: str) -> ImageDataset:
        s = self.settings
        source: Path | None = s.data_dir
        cache_dir: Path | None = s.cache_dir
        if source is None or cache_dir is None:
            data = load_settings().resolved_data()
            source = source if source is not None else data.dir
            cache_dir = cache_dir if cache_dir is not None else data.cache_dir
        split_name: Split = "train" if split == "train" else "test"
        return load_dataset(s.dataset, split_name, source=source, cache_dir=cache_dir)

    async def _stream(self, run: Run, dataset: ImageDataset) -> None:
        """Send the images of ``dataset`` at ``run.rate`` and wait for their results.

        Raises:
            asyncio.CancelledError: stopped (frames already sent still complete).
        """
        engine = self.engine
        loop = asyncio.get_running_loop()
        outstanding = 0
        all_done = asyncio.Event()
        all_done.set()

        async def one(index: int, label: int) -> None:
            nonlocal outstanding
            try:
                pixels = np.array(dataset.images[index])
                result = await engine.process(run.link_id, f"{run.split}/{index}", pixels, label)
                run.record(result, label)
            finally:
                outstanding -= 1
                if outstanding == 0:
                    all_done.set()

        start = loop.time()
        for i in range(run.total):
            if run.rate > 0:
                delay = start + i / run.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await engine.acquire(run.link_id)
            outstanding += 1
            all_done.clear()
            engine.spawn(one(i, int(dataset.labels[i])))
        await all_done.wait()

    def _prune(self) -> None:
        finished = [k for k, r in self._runs.items() if r.finished]
        for key in finished[: max(0, len(finished) - self.settings.max_runs)]:
            del self._runs[key]

    async def stop(self) -> None:
        """Stop feeding images to every active run (frames already sent still complete) and
        stop waiting for split loads (a decode already in its thread runs to its end)."""
        self._stopping = True
        tasks = [*self._tasks.values(), *self._loads.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
