"""The receiver: frame decoding in process, and the gRPC service on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rkdsc_core.link import LinkBundle
from services._wire import WireError
from services.channel.server import AppliedChannel, impair_frame
from services.channel.settings import ChannelParams
from services.pb import frame_pb2, services_pb2_grpc
from services.receiver.server import SERVICE_NAME, FrameDecoder

from ..channel.helpers import (
    Running,
    reference_decode,
    running_channel,
    running_receiver,
    symbol_frames,
)

PREDICTED, LOST, ERROR = (
    frame_pb2.FRAME_FATE_PREDICTED,
    frame_pb2.FRAME_FATE_LOST,
    frame_pb2.FRAME_FATE_ERROR,
)
PARAMS = ChannelParams(model="rayleigh", snr_db=10.0, erasure_prob=0.1, seed=5)


def channel_frames(
    link: LinkBundle, count: int, params: ChannelParams = PARAMS, **kwargs: Any
) -> list[frame_pb2.ChannelFrame]:
    """Frames from the tiny link through the emulator's channel step (config version 4)."""
    applied = AppliedChannel.build(params, 4)
    return [impair_frame(f.message, applied, 4096) for f in symbol_frames(link, count, **kwargs)]


class TestFrameDecoder:
    def test_prediction_equals_the_in_process_pipeline(self, tiny_link: LinkBundle) -> None:
        sent = symbol_frames(tiny_link, 2, length=32)
        decoder = FrameDecoder(tiny_link, "pilot", 4096)
        applied = AppliedChannel.build(PARAMS, 4)
        for s in sent:
            result = decoder.decode(impair_frame(s.message, applied, 4096))
            probs, snr, _ = reference_decode(tiny_link, s, PARAMS)
            pred = result.prediction
            assert result.fate == PREDICTED
            assert torch.equal(torch.tensor(list(pred.probabilities)), probs)
            assert pred.class_index == int(probs.argmax())
            assert pred.class_name == tiny_link.classes[pred.class_index]
            assert pred.estimated_snr_db == float(snr)
            assert (pred.channel_snr_db, pred.channel_knowledge) == (10.0, "pilot")

    def test_perfect_knowledge_uses_the_true_channel(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=16)
        result = FrameDecoder(tiny_link, "perfect", 4096).decode(cf)
        (sent,) = symbol_frames(tiny_link, 1, length=16)
        probs, _, _ = reference_decode(tiny_link, sent, PARAMS, knowledge="perfect")
        assert torch.equal(torch.tensor(list(result.prediction.probabilities)), probs)
        assert result.prediction.estimated_snr_db == pytest.approx(10.0, abs=1e-4)
        assert result.prediction.channel_knowledge == "perfect"

    def test_result_carries_identity_versions_and_timings(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8, labels=[3], first_sequence=9)
        cf.channel.channel_seconds = 0.25
        result = FrameDecoder(tiny_link, "pilot", 4096).decode(cf)
        assert (result.link_id, result.sequence, result.image_id) == ("link-a", 9, "img-9")
        assert (result.num_symbols, result.tx_config_version) == (8, 3)
        assert (result.channel_config_version, result.tx_snr_db) == (4, 10.0)
        assert (result.timings.encode_seconds, result.timings.channel_seconds) == (0.001, 0.25)
        assert result.prediction.correct == (result.prediction.class_index == 3)

    def test_unlabelled_frame_leaves_correct_unset(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8)
        result = FrameDecoder(tiny_link, "pilot", 4096).decode(cf)
        assert not result.prediction.HasField("correct")

    def test_lost_frame_is_reported_lost(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8)
        cf.channel.frame_lost = True
        assert FrameDecoder(tiny_link, "pilot", 4096).decode(cf).fate == LOST

    def test_one_pilot_gives_a_prediction_but_no_snr_estimate(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8)
        cf.channel.received = bytes(3) + b"\x01" + cf.channel.received[4:]  # 1 of 4 pilots
        pred = FrameDecoder(tiny_link, "pilot", 4096).decode(cf).prediction
        assert math.isnan(pred.estimated_snr_db) and len(pred.probabilities) == 10
        (cf,) = channel_frames(tiny_link, 1, length=8)
        cf.channel.received = bytes(2) + b"\x01\x01" + cf.channel.received[4:]  # 2 of 4
        assert math.isfinite(
            FrameDecoder(tiny_link, "pilot", 4096).decode(cf).prediction.estimated_snr_db
        )

    def test_frame_with_every_pilot_erased_is_an_error(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8)
        cf.channel.received = bytes(4) + cf.channel.received[4:]
        result = FrameDecoder(tiny_link, "pilot", 4096).decode(cf)
        assert result.fate == ERROR and result.error.startswith("DATA_LOSS:")

    @pytest.mark.parametrize(("fading", "warned"), [("fast", True), ("block", False)])
    def test_pilot_csi_warns_once_about_gains_that_vary_within_a_frame(
        self, tiny_link: LinkBundle, caplog: pytest.LogCaptureFixture, fading: str, warned: bool
    ) -> None:
        params = ChannelParams(model="rayleigh", snr_db=10.0, fading=fading, seed=5)  # type: ignore[arg-type]
        decoder = FrameDecoder(tiny_link, "pilot", 4096)
        with caplog.at_level("WARNING", logger="services.receiver.server"):
            for cf in channel_frames(tiny_link, 3, params, length=8):
                assert decoder.decode(cf).fate == PREDICTED
        warnings = [r for r in caplog.records if "block fading" in r.getMessage()]
        assert len(warnings) == (1 if warned else 0)

    @pytest.mark.parametrize(
        ("corrupt", "message"),
        [
            (lambda cf: setattr(cf.frame, "num_symbols", 12), "not one of the link's lengths"),
            (lambda cf: setattr(cf.frame, "pilots", cf.frame.pilots[:24]), "pilots: the link"),
            (lambda cf: setattr(cf.frame, "symbols", cf.frame.symbols[:-8]), "symbols: expected"),
            (
                lambda cf: setattr(cf.frame, "symbols", b"\x00\x00\xc0\x7f" + cf.frame.symbols[4:]),
                "NaN",
            ),
            (lambda cf: setattr(cf.channel, "gains", cf.channel.gains[:-8]), "channel.gains"),
            (lambda cf: setattr(cf.channel, "received", cf.channel.received[:-1]), "received"),
            (lambda cf: setattr(cf.channel, "received", b"\x02" * 12), "must be 0"),
        ],
        ids=["L", "pilot-count", "bytes", "nan", "gains", "received-length", "received-value"],
    )
    def test_malformed_frame_is_rejected_naming_the_field(
        self,
        tiny_link: LinkBundle,
        corrupt: Callable[[frame_pb2.ChannelFrame], None],
        message: str,
    ) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=8)
        corrupt(cf)
        with pytest.raises(WireError, match=message):
            FrameDecoder(tiny_link, "pilot", 4096).decode(cf)

    def test_oversize_frame_is_rejected(self, tiny_link: LinkBundle) -> None:
        (cf,) = channel_frames(tiny_link, 1, length=64)
        with pytest.raises(WireError, match="exceeds the maximum of 40"):
            FrameDecoder(tiny_link, "pilot", 40).decode(cf)


def stub(rx: Running) -> services_pb2_grpc.ReceiverStub:
    return services_pb2_grpc.ReceiverStub(rx.channel)


async def decode(rx: Running, frames: list[frame_pb2.ChannelFrame]) -> list[frame_pb2.FrameResult]:
    return [r async for r in stub(rx).Decode(iter(frames), timeout=15)]


class TestReceiverService:
    def test_decode_answers_each_frame_and_goes_on_after_a_bad_one(
        self, tiny_link: LinkBundle, tiny_weights: Any, run_async: Any
    ) -> None:
        frames = channel_frames(tiny_link, 3, length=16)
        frames[1].frame.num_symbols = 5

        async def main() -> list[frame_pb2.FrameResult]:
            async with running_receiver(tiny_weights) as rx:
                return await decode(rx, frames)

        results = run_async(main())
        assert [r.sequence for r in results] == [0, 1, 2]
        assert [r.fate for r in results] == [PREDICTED, ERROR, PREDICTED]
        assert results[1].error.startswith("INVALID_ARGUMENT: num_symbols")
        assert all(r.timings.decode_seconds > 0 for r in results)

    def test_health_reports_serving_then_not_serving_once_stop_begins(
        self, tiny_weights: Any, run_async: Any
    ) -> None:
        async def main() -> list[int]:
            async with running_receiver(tiny_weights) as rx:
                health = health_pb2_grpc.HealthStub(rx.channel)
                request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                watch = health.Watch(request, timeout=10)
                statuses = [(await watch.read()).status]
                stopping = asyncio.create_task(rx.built.stop())
                statuses.append((await watch.read()).status)  # sent before the server stops
                await stopping
            return statuses

        assert run_async(main()) == [
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        ]

    def test_reflection_lists_the_services(self, tiny_weights: Any, run_async: Any) -> None:
        async def main() -> set[str]:
            async with running_receiver(tiny_weights) as rx:
                refl = reflection_pb2_grpc.ServerReflectionStub(rx.channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for reply in refl.ServerReflectionInfo(iter([request]), timeout=5):
                    return {s.name for s in reply.list_services_response.service}
            return set()

        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= run_async(main())

    def test_metrics_count_predictions_by_snr_bin_and_correctness(
        self, tiny_link: LinkBundle, tiny_weights: Any, run_async: Any
    ) -> None:
        frames = channel_frames(tiny_link, 4, length=16, labels=[0, 1, 2, 3])
        frames.append(channel_frames(tiny_link, 1, length=16, first_sequence=4)[0])
        frames[2].frame.symbols = b""

        async def main() -> tuple[list[frame_pb2.FrameResult], Running]:
            async with running_receiver(tiny_weights) as rx:
                return await decode(rx, frames), rx

        results, rx = run_async(main())
        right = sum(r.prediction.correct for r in results if r.prediction.HasField("correct"))
        assert rx.sample("rkdsc_receiver_predictions_total", snr_db_bin="10", correct="true") == (
            right or None
        )
        assert rx.sample("rkdsc_receiver_predictions_total", snr_db_bin="10", correct="false") == (
            3 - right or None
        )
        assert rx.sample("rkdsc_receiver_predictions_total", snr_db_bin="10", correct="unknown")
        assert rx.sample("rkdsc_receiver_frames_total", fate="predicted") == 4
        assert rx.sample("rkdsc_receiver_frames_total", fate="error") == 1
        assert rx.sample("rkdsc_receiver_decode_seconds_count") == 5
        assert rx.sample("rkdsc_receiver_symbols_per_frame_sum") == 4 * 16
        assert rx.sample("rkdsc_receiver_estimated_snr_db_count") == 4
        assert rx.sample("rkdsc_receiver_snr_estimate_error_db_count") == 4
        assert rx.sample("rkdsc_receiver_grpc_calls_total", method="Decode", code="OK") == 1

    def test_expired_frames_are_answered_without_inference(
        self, tiny_link: LinkBundle, tiny_weights: Any, run_async: Any
    ) -> None:
        frames = channel_frames(tiny_link, 3, length=16)
        now = time.time_ns()
        frames[0].frame.expires_unix_ns = now - 1_000_000  # 1 ms ago
        frames[1].frame.expires_unix_ns = now + 60 * 10**9  # in a minute

        async def main() -> tuple[list[frame_pb2.FrameResult], Running, int]:
            async with running_receiver(tiny_weights) as rx:
                decoder = rx.built.servicer.decoder
                calls = []
                real = decoder.decode
                decoder.decode = lambda cf: calls.append(cf.frame.sequence) or real(cf)
                return await decode(rx, frames), rx, calls

        results, rx, calls = run_async(main())
        assert [r.fate for r in results] == [ERROR, PREDICTED, PREDICTED]  # 0 = never expires
        assert results[0].error.startswith("DEADLINE_EXCEEDED: the frame expired ")
        assert "before the receiver" in results[0].error
        assert calls == [1, 2]
        assert rx.sample("rkdsc_receiver_frames_expired_total") == 1
        assert rx.sample("rkdsc_receiver_frames_total", fate="error") == 1
        assert rx.sample("rkdsc_receiver_decode_seconds_count") == 2  # skips not timed

    def test_unknown_weights_dir_fails_at_build(self, tmp_path: Any, run_async: Any) -> None:
        async def main() -> None:
            async with running_receiver(tmp_path / "nothing"):
                pass

        with pytest.raises(FileNotFoundError, match="no link weights"):
            run_async(main())


class TestSlowReceiver:
    def test_a_slow_receiver_catches_up_by_skipping_expired_frames(
        self, tiny_link: LinkBundle, tiny_weights: Any, run_async: Any
    ) -> None:
        """A burst 10x what the receiver can decode in time, then one frame: it is answered.

        Frames live 0.5 s and a decode takes 0.2 s: of the burst only the first few are
        decoded, the rest are skipped as expired, and the frame sent 1 s later is predicted
        (decoding the whole burst would take 6 s and expire it too).
        """
        burst = [f.message for f in symbol_frames(tiny_link, 31, length=16)]

        async def frames() -> AsyncIterator[frame_pb2.SymbolFrame]:
            expires = time.time_ns() + 500_000_000
            for f in burst[:30]:
                f.expires_unix_ns = expires
                yield f
            await asyncio.sleep(1.0)
            burst[30].expires_unix_ns = time.time_ns() + 2 * 10**9
            yield burst[30]

        async def main() -> tuple[list[frame_pb2.FrameResult], list[int], Running, float]:
            async with running_receiver(tiny_weights) as rx:
                decoder = rx.built.servicer.decoder
                decoded: list[int] = []
                real = decoder.decode

                def slow(cf: frame_pb2.ChannelFrame) -> frame_pb2.FrameResult:
                    decoded.append(cf.frame.sequence)
                    time.sleep(0.2)
                    return real(cf)

                decoder.decode = slow
                target = f"127.0.0.1:{rx.built.port}"
                async with running_channel(target, deadline_seconds=8.0) as emu:
                    call = services_pb2_grpc.ChannelEmulatorStub(emu.channel).Transmit(
                        frames(), timeout=20
                    )
                    results = [r async for r in call]
                    expired = emu.sample("rkdsc_channel_frames_expired_total") or 0
                    return results, decoded, rx, expired

        results, decoded, rx, emu_expired = run_async(main())
        by_sequence = {r.sequence: r for r in results}
        assert sorted(by_sequence) == list(range(31))
        assert by_sequence[30].fate == PREDICTED
        assert 1 <= len(decoded) <= 5, decoded
        assert all(
            r.fate == PREDICTED or r.error.startswith("DEADLINE_EXCEEDED: ") for r in results
        )
        # Every frame was decoded or skipped as expired, by the receiver or (if it came too
        # late even there) by the emulator: none was decoded for nobody.
        rx_expired = rx.sample("rkdsc_receiver_frames_expired_total") or 0
        assert len(decoded) + rx_expired + emu_expired == 31
