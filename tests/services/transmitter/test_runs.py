"""Dataset runs: StartRun streams a split through the link, GetRun reports the counts."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from rkdsc_core.data import ImageDataset
from rkdsc_core.data.specs import CIFAR10_CLASSES
from services.pb import frame_pb2, services_pb2
from services.transmitter.runs import ACTIVE_STATES, Run, RunManager

from ._support import FakeChannel, Stack, run, running_stack

CLASSES = ("airplane", "bird", "cat")
"""Two images each per split; the fake receiver always says "cat"."""


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 image-folder tree: {train,test}/<class>/<n>.png, 32x32 RGB."""
    root = tmp_path_factory.mktemp("cifar-tree")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for n in range(2):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{n}.png")
    return root


def lose_airplanes(frame: frame_pb2.SymbolFrame) -> str:
    return "lose" if frame.label == CIFAR10_CLASSES.index("airplane") else "predict"


async def wait_done(stack: Stack, run_id: str) -> services_pb2.RunStatus:
    for _ in range(400):
        status = await stack.stub.GetRun(services_pb2.GetRunRequest(run_id=run_id), timeout=5)
        if status.state not in ACTIVE_STATES:
            return status
        await asyncio.sleep(0.025)
    raise AssertionError(f"run {run_id} still {status.state}")


class GatedLoad:
    """Stands in for ``RunManager._load``: counts the loads, each waits for ``gate`` (a slow
    cold decode) and then loads the split for real, or raises ``fail`` if set."""

    def __init__(self, runs: RunManager) -> None:
        self.real = runs._load
        self.gate = threading.Event()
        self.calls: list[str] = []
        self.fail: Exception | None = None

    def __call__(self, split: str) -> ImageDataset:
        self.calls.append(split)
        if not self.gate.wait(timeout=20):
            raise AssertionError("the test never opened the gate")
        if self.fail is not None:
            raise self.fail
        return self.real(split)


class TestRuns:
    def test_run_reaches_done_with_the_right_counts(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[services_pb2.RunStatus, services_pb2.RunStatus, FakeChannel]:
            fake = FakeChannel(channel_snr_db=20.3, decide=lose_airplanes)
            async with running_stack(
                tx_weights, fake, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=6), timeout=10
                )
                return started, await wait_done(stack, started.run_id), fake

        started, done, fake = run(scenario())
        assert started.state == "loading" and started.total == 6 and started.run_id
        assert done.state == "done" and done.error == ""
        assert (done.total, done.sent, done.predicted, done.lost, done.errors) == (6, 6, 4, 2, 0)
        assert done.correct == 2 and done.accuracy == pytest.approx(0.5)
        assert done.symbols_per_image == pytest.approx(64.0)
        assert done.mean_end_to_end_seconds > 0
        assert [(b.snr_db, b.predicted, b.correct) for b in done.per_snr] == [(20.0, 4, 2)]
        assert done.per_snr[0].accuracy == pytest.approx(0.5)
        labels = sorted(f.label for f in fake.frames)
        assert labels == sorted([0, 0, 2, 2, 3, 3])
        assert {f.image_id for f in fake.frames} == {f"test/{i}" for i in range(6)}

    def test_run_on_a_named_link_uses_it(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[services_pb2.RunStatus, FakeChannel]:
            fake = FakeChannel()
            async with running_stack(
                tx_weights, fake, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="train", num_images=2, link_id="lab-2"),
                    timeout=10,
                )
                return await wait_done(stack, started.run_id), fake

        done, fake = run(scenario())
        assert done.state == "done" and done.predicted == 2
        assert {f.link_id for f in fake.frames} == {"lab-2"}
        assert sorted(f.sequence for f in fake.frames) == [0, 1]

    def test_a_finished_run_frees_its_link_for_another(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[list[str], str]:
            async with running_stack(
                tx_weights, max_links=1, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                states = []
                for link_id in ("lab-1", "lab-2"):
                    started = await stack.stub.StartRun(
                        services_pb2.RunRequest(split="train", num_images=2, link_id=link_id),
                        timeout=10,
                    )
                    states.append((await wait_done(stack, started.run_id)).state)
                stack.tx.engine.hold("lab-3")  # a run in progress on the one link allowed
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stack.stub.StartRun(
                        services_pb2.RunRequest(split="train", num_images=2, link_id="lab-4"),
                        timeout=10,
                    )
                return states, refused.value.code().name

        states, code = run(scenario())
        assert states == ["done", "done"]
        assert code == "RESOURCE_EXHAUSTED"

    def test_a_refused_run_closes_no_link(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[str, bool, float | None]:
            async with running_stack(
                tx_weights, max_links=1, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                engine = stack.tx.engine
                warm = await stack.stub.StartRun(  # the split is loaded: sizes are checked now
                    services_pb2.RunRequest(split="train", num_images=1), timeout=10
                )
                await wait_done(stack, warm.run_id)
                await engine.acquire("lab-1")  # the one other link, idle once answered
                await engine.process("lab-1", "x", np.zeros((32, 32, 3), np.uint8))
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stack.stub.StartRun(
                        services_pb2.RunRequest(split="train", num_images=999, link_id="lab-2"),
                        timeout=10,
                    )
                closed = stack.sample("rkdsc_transmitter_links_closed_total")
                return refused.value.code().name, engine.link("lab-1") is not None, closed

        code, kept, closed = run(scenario())
        assert code == "INVALID_ARGUMENT"
        assert kept and closed == 0.0

    def test_rate_paces_the_images(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> float:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=4, rate=20.0), timeout=10
                )
                t0 = time.perf_counter()
                done = await wait_done(stack, started.run_id)
                assert done.state == "done" and done.predicted == 4
                return time.perf_counter() - t0

        assert run(scenario()) >= 0.12  # 3 gaps of 50 ms

    def test_get_run_unknown_is_not_found(self, tx_weights: Path) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(tx_weights) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.GetRun(services_pb2.GetRunRequest(run_id="nope"), timeout=5)
                return err.value

        assert run(scenario()).code() == grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize(
        ("request_", "needle"),
        [
            (services_pb2.RunRequest(split="val", num_images=1), "split"),
            (services_pb2.RunRequest(split="test", num_images=0), "num_images"),
            (services_pb2.RunRequest(split="test", num_images=1, rate=-1), "rate"),
            (services_pb2.RunRequest(split="test", num_images=1, link_id="bad id"), "link_id"),
        ],
    )
    def test_bad_run_request_is_invalid_argument(
        self,
        tx_weights: Path,
        image_folder: Path,
        tmp_path: Path,
        request_: services_pb2.RunRequest,
        needle: str,
    ) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.StartRun(request_, timeout=10)
                return err.value

        err = run(scenario())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in err.details()

    def test_missing_dataset_fails_the_run_with_failed_precondition(
        self, tx_weights: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[services_pb2.RunStatus, services_pb2.RunStatus]:
            async with running_stack(
                tx_weights, data_dir=tmp_path / "no-such-data", cache_dir=tmp_path / "cache"
            ) as stack:
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=1), timeout=10
                )
                return started, await wait_done(stack, started.run_id)

        started, failed = run(scenario())
        assert started.state == "loading"
        assert failed.state == "failed" and failed.sent == 0
        assert failed.error.startswith("FAILED_PRECONDITION: ")
        assert "no-such-data" in failed.error

    def test_too_many_images_fails_the_run_while_the_split_loads(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> services_pb2.RunStatus:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=7), timeout=10
                )
                return await wait_done(stack, started.run_id)

        failed = run(scenario())
        assert failed.state == "failed" and failed.sent == 0
        assert failed.error.startswith("INVALID_ARGUMENT: num_images=7 exceeds the 6 images")

    def test_too_many_images_is_refused_at_once_once_the_split_is_loaded(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path
    ) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                warm = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=1), timeout=10
                )
                await wait_done(stack, warm.run_id)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.StartRun(
                        services_pb2.RunRequest(split="test", num_images=7), timeout=10
                    )
                return err.value

        err = run(scenario())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "num_images=7" in err.details()


class TestRunLoading:
    """StartRun answers at once; the split is decoded in the run's task, once per split."""

    def test_start_run_answers_within_a_deadline_shorter_than_the_load(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def scenario() -> tuple[list[str], list[str], services_pb2.RunStatus]:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                load = GatedLoad(stack.tx.runs)
                monkeypatch.setattr(stack.tx.runs, "_load", load)
                request = services_pb2.RunRequest(split="test", num_images=4)
                started = await stack.stub.StartRun(request, timeout=1.0)  # the load: longer
                await asyncio.sleep(0.3)
                status = await stack.stub.GetRun(
                    services_pb2.GetRunRequest(run_id=started.run_id), timeout=5
                )
                states = [started.state, status.state]
                load.gate.set()
                return states, load.calls, await wait_done(stack, started.run_id)

        states, calls, done = run(scenario())
        assert states == ["loading", "loading"]
        assert calls == ["test"]
        assert done.state == "done" and done.predicted == 4

    def test_concurrent_runs_of_a_split_share_one_load(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def scenario() -> tuple[list[str], list[str]]:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                load = GatedLoad(stack.tx.runs)
                monkeypatch.setattr(stack.tx.runs, "_load", load)
                request = services_pb2.RunRequest(split="test", num_images=2)
                first = await stack.stub.StartRun(request, timeout=5)
                # A client that gave up waiting on the first call and retried.
                second = await stack.stub.StartRun(request, timeout=5)
                await asyncio.sleep(0.2)
                load.gate.set()
                states = [(await wait_done(stack, r.run_id)).state for r in (first, second)]
                third = await stack.stub.StartRun(request, timeout=5)  # cached by now
                states.append((await wait_done(stack, third.run_id)).state)
                return states, load.calls

        states, calls = run(scenario())
        assert states == ["done", "done", "done"]
        assert calls == ["test"]

    def test_a_failed_load_fails_its_runs_and_the_next_run_loads_again(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def scenario() -> tuple[list[services_pb2.RunStatus], list[str]]:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                load = GatedLoad(stack.tx.runs)
                load.fail = ValueError("the archive is corrupt")
                monkeypatch.setattr(stack.tx.runs, "_load", load)
                request = services_pb2.RunRequest(split="test", num_images=2)
                runs = [await stack.stub.StartRun(request, timeout=5) for _ in range(2)]
                load.gate.set()
                finals = [await wait_done(stack, r.run_id) for r in runs]
                load.fail = None
                again = await stack.stub.StartRun(request, timeout=5)
                finals.append(await wait_done(stack, again.run_id))
                return finals, load.calls

        finals, calls = run(scenario())
        assert [f.state for f in finals] == ["failed", "failed", "done"]
        assert finals[0].error == "FAILED_PRECONDITION: the archive is corrupt"
        assert finals[1].error == finals[0].error
        assert calls == ["test", "test"]

    def test_a_loading_run_counts_against_the_active_runs(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache", max_active_runs=1
            ) as stack:
                load = GatedLoad(stack.tx.runs)
                monkeypatch.setattr(stack.tx.runs, "_load", load)
                request = services_pb2.RunRequest(split="test", num_images=2)
                await stack.stub.StartRun(request, timeout=5)
                try:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stack.stub.StartRun(request, timeout=5)
                finally:
                    load.gate.set()
                return err.value

        assert run(scenario()).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def test_shutdown_fails_a_loading_run_as_cancelled(
        self, tx_weights: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def scenario() -> Run:
            async with running_stack(
                tx_weights, data_dir=image_folder, cache_dir=tmp_path / "cache"
            ) as stack:
                load = GatedLoad(stack.tx.runs)
                monkeypatch.setattr(stack.tx.runs, "_load", load)
                started = await stack.stub.StartRun(
                    services_pb2.RunRequest(split="test", num_images=2), timeout=5
                )
                try:
                    await stack.tx.runs.stop()
                finally:
                    load.gate.set()
                return stack.tx.runs.get(started.run_id)

        stopped = run(scenario())
        assert stopped.state == "failed"
        assert stopped.error == "cancelled: the transmitter is shutting down"


def test_run_counts_each_error_by_its_status_name() -> None:

    run = Run("r", "test", "default", total=4, rate=0.0)
    for error in ("UNAVAILABLE: gone", "UNAVAILABLE: gone again", "DEADLINE_EXCEEDED: slow"):
        run.record(frame_pb2.FrameResult(fate=frame_pb2.FRAME_FATE_ERROR, error=error), 0)
    run.record(frame_pb2.FrameResult(fate=frame_pb2.FRAME_FATE_LOST, num_symbols=8), 0)
    status = run.to_proto()
    assert (status.errors, status.lost) == (3, 1)
    assert dict(status.errors_by_code) == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}
