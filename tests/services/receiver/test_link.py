"""Channel emulator + receiver over gRPC, checked against the in-process pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rkdsc_core.channel import frame_generator
from rkdsc_core.link import LinkBundle
from services.channel.settings import Settings as ChannelSettings
from services.pb import frame_pb2, services_pb2_grpc

from ..channel.helpers import (
    LINK_ID,
    reference_decode,
    running_channel,
    running_receiver,
    symbol_frames,
    transmit,
)

CHANNELS = {
    "awgn": {"model": "awgn", "snr_db": 6.0, "seed": 1},
    "rayleigh-fast-erasures": {
        "model": "rayleigh",
        "fading": "fast",
        "snr_db": 15.0,
        "erasure_prob": 0.125,
        "seed": 2,
    },
    "rician-block": {"model": "rician", "k_factor": 4.0, "snr_db": 0.0, "seed": 3},
}


def run_link(
    run_async: Any,
    weights: Path,
    frames: list[frame_pb2.SymbolFrame],
    channel: dict[str, Any],
    knowledge: str = "pilot",
) -> dict[int, frame_pb2.FrameResult]:
    """Start a receiver and an emulator on 127.0.0.1:0, send ``frames`` on one stream."""

    async def main() -> dict[int, frame_pb2.FrameResult]:
        async with (
            running_receiver(weights, knowledge=knowledge, torch_threads=1) as rx,
            running_channel(f"127.0.0.1:{rx.built.port}", **channel) as emu,
        ):
            stub = services_pb2_grpc.ChannelEmulatorStub(emu.channel)
            return await transmit(stub, frames)

    result: dict[int, frame_pb2.FrameResult] = run_async(main())
    return result


class TestChannelToReceiver:
    @pytest.mark.parametrize("name", list(CHANNELS))
    def test_predictions_equal_the_in_process_pipeline(
        self, tiny_link: LinkBundle, tiny_weights: Path, run_async: Any, name: str
    ) -> None:
        sent = symbol_frames(tiny_link, 3, length=16, labels=[1, 2, 3])
        results = run_link(run_async, tiny_weights, [s.message for s in sent], CHANNELS[name])
        params = ChannelSettings(**CHANNELS[name]).channel_params()
        for s in sent:
            r = results[s.message.sequence]
            probs, snr, _ = reference_decode(tiny_link, s, params)
            assert r.fate == frame_pb2.FRAME_FATE_PREDICTED, r.error
            got = torch.tensor(list(r.prediction.probabilities))
            assert torch.allclose(got, probs, rtol=0, atol=1e-6)
            assert r.prediction.class_index == int(probs.argmax())
            assert r.prediction.estimated_snr_db == pytest.approx(float(snr), abs=1e-5)
            assert r.prediction.channel_snr_db == params.snr_db
            assert r.prediction.correct == (r.prediction.class_index == s.message.label)

    def test_full_length_frames_equal_semantic_pipeline_forward(
        self, tiny_link: LinkBundle, tiny_weights: Path, run_async: Any
    ) -> None:
        channel = CHANNELS["rayleigh-fast-erasures"]
        params = ChannelSettings(**channel).channel_params()
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
        l_max = max(tiny_link.pipeline.lengths)
        sent = symbol_frames(tiny_link, 2, length=l_max, tx_snr_db=10.0)
        results = run_link(run_async, tiny_weights, [s.message for s in sent], channel)
        for i in range(2):
            with torch.no_grad():
                out = tiny_link.pipeline(
                    images[i : i + 1],
                    params.channel(),
                    params.snr_db,
                    tx_snr_db=10.0,
                    generator=[frame_generator(params.seed, LINK_ID, i)],
                )
            probs = torch.softmax(out.logits, -1)[0]
            got = torch.tensor(list(results[i].prediction.probabilities))
            assert torch.allclose(got, probs, rtol=0, atol=1e-6)
            assert results[i].prediction.class_index == int(probs.argmax())

    def test_perfect_csi_receiver_sees_the_applied_snr(
        self, tiny_link: LinkBundle, tiny_weights: Path, run_async: Any
    ) -> None:
        sent = symbol_frames(tiny_link, 2, length=8)
        channel = CHANNELS["rician-block"]
        results = run_link(run_async, tiny_weights, [s.message for s in sent], channel, "perfect")
        params = ChannelSettings(**channel).channel_params()
        for s in sent:
            r = results[s.message.sequence]
            probs, _, _ = reference_decode(tiny_link, s, params, knowledge="perfect")
            assert torch.allclose(torch.tensor(list(r.prediction.probabilities)), probs, atol=1e-6)
            assert r.prediction.estimated_snr_db == pytest.approx(0.0, abs=1e-4)
            assert r.prediction.channel_knowledge == "perfect"

    def test_results_carry_versions_and_stage_timings(
        self, tiny_link: LinkBundle, tiny_weights: Path, run_async: Any
    ) -> None:
        sent = symbol_frames(tiny_link, 2, length=32, tx_snr_db=12.0)
        results = run_link(run_async, tiny_weights, [s.message for s in sent], CHANNELS["awgn"])
        for r in results.values():
            assert (r.tx_config_version, r.channel_config_version) == (3, 1)
            assert (r.num_symbols, r.tx_snr_db, r.link_id) == (32, 12.0, LINK_ID)
            t = r.timings
            assert t.encode_seconds == 0.001 and t.channel_seconds > 0 and t.decode_seconds > 0
