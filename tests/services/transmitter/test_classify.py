"""The client API: Classify streams images in and one FrameResult per image out."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rkdsc_core.data import to_tensor
from rkdsc_core.link import load_link
from services._wire import from_wire
from services.pb import frame_pb2, services_pb2
from services.transmitter.server import MAX_IMAGE_ID

from ._support import FAKE_CLASS, FakeChannel, raw_request, run, running_stack

PREDICTED = frame_pb2.FRAME_FATE_PREDICTED
LOST = frame_pb2.FRAME_FATE_LOST
ERROR = frame_pb2.FRAME_FATE_ERROR


def pixels(seed: int, h: int = 32, w: int = 32, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def encoded_request(
    image_id: str, arr: np.ndarray, label: int | None = None
) -> services_pb2.ClassifyRequest:
    req = services_pb2.ClassifyRequest(
        image_id=image_id, image=services_pb2.Image(encoded=png(arr))
    )
    if label is not None:
        req.label = label
    return req


class TestClassify:
    def test_png_images_get_one_prediction_each_with_their_ids(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights) as stack:
                reqs = [encoded_request(f"img-{i}", pixels(i), label=i) for i in range(5)]
                return await stack.classify(reqs)

        results = run(scenario())
        assert sorted(r.image_id for r in results) == [f"img-{i}" for i in range(5)]
        for r in results:
            assert r.fate == PREDICTED
            assert r.prediction.class_index == FAKE_CLASS
            assert r.prediction.correct == (r.image_id == f"img-{FAKE_CLASS}")
            assert r.link_id == "default" and r.num_symbols == 64 and r.tx_config_version == 1
            assert r.tx_snr_db == pytest.approx(10.0)
            assert r.timings.end_to_end_seconds > 0 and r.timings.encode_seconds > 0
        assert sorted(r.sequence for r in results) == list(range(5))

    def test_raw_images_with_one_and_three_channels(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights) as stack:
                reqs = [raw_request("rgb", pixels(1)), raw_request("gray", pixels(2, c=1))]
                return await stack.classify(reqs)

        results = run(scenario())
        assert {r.image_id: r.fate for r in results} == {"rgb": PREDICTED, "gray": PREDICTED}

    def test_symbols_sent_equal_the_in_process_pipeline(self, tx_weights: Path) -> None:
        images = {"png": pixels(3), "raw": pixels(4, 48, 40), "gray": pixels(5, c=1)}

        async def scenario() -> tuple[list[frame_pb2.FrameResult], list[frame_pb2.SymbolFrame]]:
            fake = FakeChannel(estimated_snr_db=18.0)
            async with running_stack(tx_weights, fake, max_in_flight=1, snr_smoothing=0.5) as s:
                reqs = [
                    encoded_request("png", images["png"]),
                    raw_request("raw", images["raw"]),
                    raw_request("gray", images["gray"]),
                ]
                return await s.classify(reqs), list(fake.frames)

        results, frames = run(scenario())
        bundle = load_link(tx_weights)
        p = bundle.pipeline.num_pilots
        by_id = {f.image_id: f for f in frames}
        snrs = []
        for r in results:
            frame = by_id[r.image_id]
            assert (frame.sequence, frame.num_symbols, frame.tx_snr_db) == (
                r.sequence,
                r.num_symbols,
                r.tx_snr_db,
            )
            with torch.no_grad():
                tx = bundle.pipeline.transmit(
                    to_tensor(images[r.image_id][None]), r.tx_snr_db, r.num_symbols
                )
            expect = tx.frame[0]
            got = from_wire(frame.symbols, frame.num_symbols)
            assert torch.equal(got, expect[p : p + r.num_symbols])
            assert torch.equal(from_wire(frame.pilots, p), expect[:p])
            snrs.append(r.tx_snr_db)
        # feedback (EWMA 0.5 towards 18 dB) moved the SNR the encoder was conditioned on
        assert sorted(snrs) == [10.0, 14.0, 16.0]

    def test_bad_images_give_error_results_and_the_stream_goes_on(self, tx_weights: Path) -> None:
        bad_raw = services_pb2.RawImage(height=4, width=4, channels=3, data=b"\x00" * 47)
        two_channels = services_pb2.RawImage(height=2, width=2, channels=2, data=b"\x00" * 8)
        reqs = [
            services_pb2.ClassifyRequest(
                image_id="garbage", image=services_pb2.Image(encoded=b"not an image")
            ),
            encoded_request("good-1", pixels(0)),
            services_pb2.ClassifyRequest(
                image_id="wrong-size", image=services_pb2.Image(raw=bad_raw)
            ),
            services_pb2.ClassifyRequest(image_id="empty"),
            services_pb2.ClassifyRequest(
                image_id="two-channels", image=services_pb2.Image(raw=two_channels)
            ),
            raw_request("good-2", pixels(1)),
        ]

        async def scenario() -> tuple[list[frame_pb2.FrameResult], float | None]:
            async with running_stack(tx_weights) as stack:
                results = await stack.classify(reqs)
                return results, stack.sample("rkdsc_transmitter_frames_total", {"fate": "error"})

        results, errors = run(scenario())
        by_id = {r.image_id: r for r in results}
        assert len(results) == 6
        assert by_id["good-1"].fate == PREDICTED and by_id["good-2"].fate == PREDICTED
        for name, needle in [
            ("garbage", "not a readable image"),
            ("wrong-size", "47"),
            ("empty", "empty"),
            ("two-channels", "channels"),
        ]:
            r = by_id[name]
            assert r.fate == ERROR
            assert r.error.startswith("INVALID_ARGUMENT:") and needle in r.error
            assert r.num_symbols == 0 and r.tx_config_version == 1
        assert errors == 4

    def test_lost_frames_are_reported(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights) as stack:
                return await stack.classify(
                    [raw_request("lose-a", pixels(0)), raw_request("ok", pixels(1))]
                )

        results = run(scenario())
        by_id = {r.image_id: r for r in results}
        assert by_id["lose-a"].fate == LOST and by_id["lose-a"].num_symbols == 64
        assert by_id["ok"].fate == PREDICTED

    def test_unanswered_frames_are_errors_after_the_deadline(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights, deadline_seconds=0.5) as stack:
                return await stack.classify(
                    [raw_request("mute-a", pixels(0)), raw_request("ok", pixels(1))]
                )

        results = run(scenario())
        by_id = {r.image_id: r for r in results}
        assert by_id["mute-a"].fate == ERROR
        assert by_id["mute-a"].error.startswith("DEADLINE_EXCEEDED")
        assert by_id["ok"].fate == PREDICTED
        assert results[-1].image_id == "mute-a"  # completion order

    def test_duplicate_in_flight_image_id_is_rejected(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights, deadline_seconds=0.5) as stack:
                return await stack.classify(
                    [raw_request("mute-x", pixels(0)), raw_request("mute-x", pixels(1))]
                )

        results = run(scenario())
        errors = sorted(r.error.split(":")[0] for r in results)
        assert errors == ["DEADLINE_EXCEEDED", "INVALID_ARGUMENT"]

    def test_runs_holding_every_link_leave_classify_its_default_link(
        self, tx_weights: Path
    ) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights, max_links=1) as stack:
                stack.tx.engine.hold("run-1")  # a run holds the one other link allowed
                return await stack.classify([raw_request("a"), raw_request("b")])

        results = run(scenario())
        assert sorted(r.image_id for r in results) == ["a", "b"]
        assert all(r.fate == PREDICTED and r.link_id == "default" for r in results), results

    def test_frames_carry_the_time_the_transmitter_stops_waiting(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[int, int, int]:
            fake = FakeChannel()
            async with running_stack(tx_weights, fake, deadline_seconds=3.0) as stack:
                before = time.time_ns()
                await stack.classify([raw_request("a")])
                return before, fake.frames[0].expires_unix_ns, time.time_ns()

        before, expires, after = run(scenario())
        assert before + 2 * 10**9 < expires <= after + 3 * 10**9

    def test_a_client_that_stops_reading_stops_the_stream(self, tx_weights: Path) -> None:
        """Results the client has not read are bounded: the server stops taking requests."""
        taken = 0

        async def requests() -> Any:
            nonlocal taken
            bad = services_pb2.Image(raw=services_pb2.RawImage(height=1, width=1, channels=3))
            for i in range(300):  # invalid images: quick results
                taken += 1
                yield services_pb2.ClassifyRequest(image_id=str(i), image=bad)

        async def scenario() -> tuple[int, int]:
            async with running_stack(tx_weights, max_in_flight=2) as stack:
                results = stack.tx.servicer.Classify(requests(), None)  # type: ignore[arg-type]
                await anext(results)  # the client reads one result, then nothing
                await asyncio.sleep(0.5)
                seen = taken
                more = [await anext(results) for _ in range(10)]  # reading again goes on
                await results.aclose()
                return seen, len(more)

        seen, more = run(scenario())
        assert seen <= 2 + 2  # max_in_flight undelivered, the one read, one in hand
        assert more == 10

    def test_an_overlong_image_id_is_refused(self, tx_weights: Path) -> None:
        async def scenario() -> list[frame_pb2.FrameResult]:
            async with running_stack(tx_weights) as stack:
                return await stack.classify([raw_request("x" * 300), raw_request("ok")])

        results = {r.image_id: r for r in run(scenario())}
        assert results["ok"].fate == PREDICTED
        long = results["x" * MAX_IMAGE_ID]
        assert long.fate == ERROR and long.error.startswith("INVALID_ARGUMENT: image_id has 300")

    def test_broken_channel_stream_fails_its_frames_and_reconnects(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[list[frame_pb2.FrameResult], list[frame_pb2.FrameResult]]:
            fake = FakeChannel()
            async with running_stack(tx_weights, fake, max_in_flight=1) as stack:
                first = await stack.classify([raw_request("break-1", pixels(0))])
                second = await stack.classify([raw_request("after", pixels(1))])
                assert fake.streams == 2
                return first, second

        first, second = run(scenario())
        assert first[0].fate == ERROR and first[0].error.startswith("UNAVAILABLE:")
        assert "fake channel broke" in first[0].error
        assert second[0].fate == PREDICTED and second[0].sequence == 1

    def test_unreachable_channel_gives_unavailable_errors(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[list[frame_pb2.FrameResult], float | None]:
            async with running_stack(
                tx_weights, channel_target="127.0.0.1:1", deadline_seconds=1.0
            ) as stack:
                results = await stack.classify([raw_request("a", pixels(0))])
                return results, stack.sample("rkdsc_transmitter_symbols_total")

        (result,), symbols = run(scenario())
        assert result.fate == ERROR and result.error.startswith("UNAVAILABLE:")
        assert "not reachable within 1 s; the frame was not sent" in result.error
        assert result.num_symbols == 0 and symbols == 0  # nothing was sent: nothing counted

    def test_in_flight_frames_are_bounded(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[list[frame_pb2.FrameResult], int]:
            fake = FakeChannel(delay_seconds=0.05)
            peak = 0
            async with running_stack(tx_weights, fake, max_in_flight=2) as stack:

                async def watch() -> None:
                    nonlocal peak
                    for _ in range(400):
                        peak = max(peak, stack.tx.engine.in_flight)
                        await asyncio.sleep(0.005)

                watcher = asyncio.create_task(watch())
                results = await stack.classify([raw_request(f"i{i}", pixels(i)) for i in range(6)])
                watcher.cancel()
                return results, peak

        results, peak = run(scenario())
        assert len(results) == 6 and all(r.fate == PREDICTED for r in results)
        assert 1 <= peak <= 2
