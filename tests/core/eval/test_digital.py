"""Digital baselines: quantisation, the ideal-code cliff and uncoded QPSK."""

import math

import torch

from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.eval import (
    dequantize_tokens,
    ideal_code_correct,
    payload_bits,
    qpsk_channel_uses,
    quantize_tokens,
    uncoded_qpsk_correct,
)
from rkdsc_core.link import SemanticPipeline
from rkdsc_core.models import create_model


def _pipeline() -> SemanticPipeline:
    torch.manual_seed(0)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


def _tokens(p: SemanticPipeline, data: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    ((x, y),) = list(BatchLoader(data, len(data)))
    with torch.no_grad():
        return p.student.forward_tokens(x), y


def _clean_quantised(p: SemanticPipeline, t: torch.Tensor, y: torch.Tensor, bits: int) -> int:
    codes, lo, hi = quantize_tokens(t, bits)
    feats = dequantize_tokens(codes, lo, hi, bits, t.shape[1:])
    with torch.no_grad():
        return int((p.student.forward_head(feats).argmax(1) == y).sum())


class TestQuantize:
    def test_many_bits_is_nearly_lossless(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        t, y = _tokens(p, tiny_dataset)
        codes, lo, hi = quantize_tokens(t, 16)
        assert int(codes.min()) >= 0 and int(codes.max()) == 2**16 - 1
        back = dequantize_tokens(codes, lo, hi, 16, t.shape[1:])
        step = float(((hi - lo) / (2**16 - 1)).max())
        assert float((back - t).abs().max()) <= step / 2 + 1e-5
        with torch.no_grad():
            clean = p.student.forward_head(t).argmax(1)
            quant = p.student.forward_head(back).argmax(1)
        assert float((clean == quant).float().mean()) >= 0.95
        assert abs(_clean_quantised(p, t, y, 16) - int((clean == y).sum())) <= 2

    def test_payload_and_channel_uses(self) -> None:
        assert payload_bits(100, 4) == 464
        assert qpsk_channel_uses(100, 3, 4) == 4 + 150 + 32
        assert qpsk_channel_uses(3, 3, 0) == math.ceil(9 / 2) + 32


class TestIdealCode:
    def test_step_in_snr_at_the_capacity_threshold(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        t, y = _tokens(p, tiny_dataset)
        bits, length = 2, 64
        payload = payload_bits(t[0].numel(), bits)
        threshold_db = 10 * math.log10(2 ** (payload / length) - 1)
        clean = _clean_quantised(p, t, y, bits)
        kw = {"model": "awgn", "length": length, "bits": bits, "seqs": range(len(y)), "seed": 0}
        below = ideal_code_correct(p, t, y, snr_db=threshold_db - 0.5, **kw)  # type: ignore[arg-type]
        above = ideal_code_correct(p, t, y, snr_db=threshold_db + 0.5, **kw)  # type: ignore[arg-type]
        assert below == 0 and above == clean > 0

    def test_rayleigh_loses_faded_frames(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        t, y = _tokens(p, tiny_dataset)
        kw = {"length": 64, "bits": 2, "seqs": range(len(y)), "seed": 0, "snr_db": 40.0}
        awgn = ideal_code_correct(p, t, y, model="awgn", **kw)  # type: ignore[arg-type]
        ray = ideal_code_correct(p, t, y, model="rayleigh", **kw)  # type: ignore[arg-type]
        assert ray <= awgn


class TestUncodedQpsk:
    def test_high_snr_equals_clean_quantised(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        t, y = _tokens(p, tiny_dataset)
        clean = _clean_quantised(p, t, y, 4)
        for model, knowledge in (("awgn", "perfect"), ("awgn", "pilot"), ("rayleigh", "perfect")):
            got = uncoded_qpsk_correct(
                p, t, y, model=model, knowledge=knowledge, snr_db=60.0, bits=4,
                seqs=range(len(y)), seed=0,
            )  # fmt: skip
            assert got == clean, (model, knowledge)

    def test_is_reproducible(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        t, y = _tokens(p, tiny_dataset)
        codes, _, _ = quantize_tokens(t, 4)
        kw = {"model": "awgn", "knowledge": "pilot", "bits": 4, "seqs": range(len(y)), "seed": 0}
        # reproducible: the same generators give the same bit errors
        a = uncoded_qpsk_correct(p, t, y, snr_db=-10.0, **kw)  # type: ignore[arg-type]
        b = uncoded_qpsk_correct(p, t, y, snr_db=-10.0, **kw)  # type: ignore[arg-type]
        assert a == b and codes.shape[0] == len(y)
