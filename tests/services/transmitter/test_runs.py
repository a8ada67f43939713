"""Dataset runs: StartRun streams a split through the link, GetRun reports the counts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from rkdsc_core.data.specs import CIFAR10_CLASSES
from services.pb import frame_pb2, services_pb2
from services.transmitter.runs import Run

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
        if status.state != "running":
            return status
        await asyncio.sleep(0.025)
    raise AssertionError(f"run {run_id} still running")


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
        assert started.state == "running" and started.total == 6 and started.run_id
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
            (services_pb2.RunRequest(split="test", num_images=7), "num_images=7"),
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

    def test_missing_dataset_is_failed_precondition(self, tx_weights: Path, tmp_path: Path) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(
                tx_weights, data_dir=tmp_path / "no-such-data", cache_dir=tmp_path / "cache"
            ) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.StartRun(
                        services_pb2.RunRequest(split="test", num_images=1), timeout=10
                    )
                return err.value

        err = run(scenario())
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no-such-data" in err.details()


def test_run_counts_each_error_by_its_status_name() -> None:

    run = Run("r", "test", "default", total=4, rate=0.0)
    for error in ("UNAVAILABLE: gone", "UNAVAILABLE: gone again", "DEADLINE_EXCEEDED: slow"):
        run.record(frame_pb2.FrameResult(fate=frame_pb2.FRAME_FATE_ERROR, error=error), 0)
    run.record(frame_pb2.FrameResult(fate=frame_pb2.FRAME_FATE_LOST, num_symbols=8), 0)
    status = run.to_proto()
    assert (status.errors, status.lost) == (3, 1)
    assert dict(status.errors_by_code) == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}
