"""Digital baselines: quantisation, the ideal-code cliff, uncoded QPSK and the transform code."""

import math

import pytest
import torch

from rkdsc_core.channel import Channel, ChannelConfig, ChannelOutput, frame_generators
from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.eval import (
    PcaCode,
    dequantize_tokens,
    digital,
    ideal_code_correct,
    outage_gain,
    payload_bits,
    pca_ideal_correct,
    pca_qpsk_correct,
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


def _pca_clean(p: SemanticPipeline, code: PcaCode, t: torch.Tensor, y: torch.Tensor, k: int) -> int:
    """Images right from the first ``k`` coefficients, as sent (no channel)."""
    with torch.no_grad():
        return int((p.student.forward_head(code.decode(code.encode(t, k))).argmax(1) == y).sum())


def _fitted(
    data: ImageDataset,
) -> tuple[SemanticPipeline, torch.Tensor, torch.Tensor, PcaCode]:
    """A pipeline, its tokens and labels of ``data``, and a 4-bit transform code fit on them."""
    p = _pipeline()
    t, y = _tokens(p, data)
    return p, t, y, PcaCode.fit(t, bits=4)


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
        assert ray < awgn  # these seeds fade some frames below the bits' threshold


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


def _low_rank_tokens(n: int = 200, rank: int = 3) -> torch.Tensor:
    """``[n, 4, 8]`` tokens on a ``rank``-dimensional affine subspace (plus a mean)."""
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(n, rank, generator=g) * torch.tensor([5.0, 2.0, 1.0][:rank])
    directions = torch.linalg.qr(torch.randn(32, rank, generator=g))[0].T
    return (coeffs @ directions + 0.5).reshape(n, 4, 8)


class TestPcaCode:
    def test_finds_the_subspace_and_reconstructs_it(self) -> None:
        tokens = _low_rank_tokens()
        code = PcaCode.fit(tokens, bits=12)
        assert code.max_components == 3 and code.token_shape == (4, 8)
        assert torch.allclose(code.basis @ code.basis.T, torch.eye(3), atol=1e-5)
        assert code.scale[0] > code.scale[1] > code.scale[2] > 0
        back = code.decode(code.encode(tokens, 3))
        inside = (tokens.reshape(len(tokens), -1) - code.mean) @ code.basis.T
        kept = (inside.abs() < code.clip * code.scale).all(1)  # not clipped
        err = (back - tokens).reshape(len(tokens), -1)[kept].abs().max()
        assert float(err) < 1e-2 and int(kept.sum()) > 150

    def test_fewer_components_lose_more(self) -> None:
        tokens = _low_rank_tokens()
        code = PcaCode.fit(tokens, bits=8)
        errors = [float((code.decode(code.encode(tokens, k)) - tokens).square().mean())
                  for k in (0, 1, 2, 3)]  # fmt: skip
        assert errors == sorted(errors, reverse=True) and errors[3] < 0.01 * errors[0]

    def test_codes_and_rate(self) -> None:
        code = PcaCode.fit(_low_rank_tokens(), bits=4)
        codes = code.encode(_low_rank_tokens(), 2)
        assert codes.shape == (200, 2) and codes.dtype == torch.int64
        assert int(codes.min()) >= 0 and int(codes.max()) <= 15
        assert [code.components_for(c) for c in (3.9, 4.0, 11.0, 1e6)] == [0, 1, 2, 3]

    def test_bad_input_is_refused(self) -> None:
        with pytest.raises(ValueError, match="bits"):
            PcaCode.fit(_low_rank_tokens(), bits=0)
        with pytest.raises(ValueError, match=r"\[N >= 2, T, D\]"):
            PcaCode.fit(torch.zeros(1, 4, 8))


class TestPcaIdealCode:
    def test_rate_follows_the_snr_and_nothing_fits_below_one_coefficient(
        self, tiny_dataset: ImageDataset
    ) -> None:
        p, t, y, code = _fitted(tiny_dataset)
        kw = {"model": "awgn", "length": 8, "seqs": range(len(y)), "seed": 0}
        # L * log2(1 + SNR) < 4 bits: not one coefficient fits, every image is lost.
        assert pca_ideal_correct(p, code, t, y, snr_db=-10.0, **kw) == 0  # type: ignore[arg-type]
        snr_db = 10.0
        k = code.components_for(8 * math.log2(1 + 10 ** (snr_db / 10)))
        want = _pca_clean(p, code, t, y, k)
        got = pca_ideal_correct(p, code, t, y, snr_db=snr_db, **kw)  # type: ignore[arg-type]
        assert 0 < k < code.max_components and got == want

    def test_rayleigh_fades_are_outages(self, tiny_dataset: ImageDataset) -> None:
        p, t, y, code = _fitted(tiny_dataset)
        kw = {"length": 16, "seqs": range(len(y)), "seed": 0, "snr_db": 6.0}
        awgn = pca_ideal_correct(p, code, t, y, model="awgn", **kw)  # type: ignore[arg-type]
        ray = pca_ideal_correct(p, code, t, y, model="rayleigh", **kw)  # type: ignore[arg-type]
        assert ray < awgn

    def test_the_outage_gain_is_the_fade_quantile(self) -> None:
        assert outage_gain("awgn", 0.1) == 1.0
        assert outage_gain("rayleigh", 0.1) == pytest.approx(-math.log(0.9), rel=0.02)
        with pytest.raises(ValueError, match="outage"):
            outage_gain("rayleigh", 1.0)


class TestPcaUncodedQpsk:
    def test_in_the_links_channel_uses_error_free_at_high_snr(
        self, tiny_dataset: ImageDataset
    ) -> None:
        p, t, y, code = _fitted(tiny_dataset)
        kw = {"model": "awgn", "knowledge": "perfect", "seqs": range(len(y)), "seed": 0}
        # L = 8 symbols carry 16 bits: the first 4 coefficients of 4 bits, none lost at 60 dB.
        want = _pca_clean(p, code, t, y, 4)
        assert pca_qpsk_correct(p, code, t, y, snr_db=60.0, length=8, **kw) == want  # type: ignore[arg-type]
        # One symbol carries 2 bits: not one 4-bit coefficient fits, every image is lost.
        assert pca_qpsk_correct(p, code, t, y, snr_db=60.0, length=1, **kw) == 0  # type: ignore[arg-type]

    def test_bit_errors_fall_where_they_fall(self, tiny_dataset: ImageDataset) -> None:
        p, t, y, code = _fitted(tiny_dataset)
        kw = {"model": "rayleigh", "knowledge": "pilot", "length": 16, "seed": 0}
        kw |= {"seqs": range(len(y))}
        got = [pca_qpsk_correct(p, code, t, y, snr_db=s, **kw) for s in (-10.0, 60.0)]  # type: ignore[arg-type]
        k = code.components_for(2 * 16)
        clean = _pca_clean(p, code, t, y, k)
        assert got[1] == clean  # pilot CSI at 60 dB: no errors
        corrupted = []
        for s in (-10.0, 60.0):  # the received bits themselves: many errors at -10 dB only
            bits = digital._codes_to_bits(code.encode(t, k), 4)
            rx = digital._uncoded_qpsk(p, bits, 16, "rayleigh", "pilot", s, range(len(y)), 0)
            corrupted.append(float((rx != bits).float().mean()))
        assert corrupted[0] > 0.1 and corrupted[1] == 0.0

    def test_sees_the_links_own_channel_draws(
        self, tiny_dataset: ImageDataset, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        p, t, y, code = _fitted(tiny_dataset)
        seen: list[tuple[torch.Tensor, ChannelOutput]] = []
        real = Channel.forward

        def spy(self: Channel, x: torch.Tensor, snr_db: float, **kw: object) -> ChannelOutput:
            out = real(self, x, snr_db, **kw)  # type: ignore[arg-type]
            seen.append((x, out))
            return out

        monkeypatch.setattr(Channel, "forward", spy)
        seqs = range(len(y))
        kw = {"model": "rayleigh", "knowledge": "pilot", "length": 16, "seed": 0}
        pca_qpsk_correct(p, code, t, y, snr_db=5.0, seqs=seqs, **kw)  # type: ignore[arg-type]
        with torch.no_grad():
            tx = p.transmit_tokens(t, 5.0, 16)
        rayleigh = Channel(ChannelConfig(model="rayleigh"))
        p.apply_channel(rayleigh, tx, 5.0, generator=frame_generators(0, "eval", seqs))
        (x_digital, digital_out), (x_link, link_out) = seen
        assert x_digital.shape == x_link.shape == (len(y), p.num_pilots + 16)
        assert torch.equal(digital_out.h, link_out.h)  # the same fades
        noise = [o.y - o.h * x for x, o in ((x_digital, digital_out), (x_link, link_out))]
        torch.testing.assert_close(noise[0], noise[1])  # and the same noise
