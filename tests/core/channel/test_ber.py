"""Uncoded BPSK/QPSK bit error rates against their closed forms."""

import math

import numpy as np
import pytest
import torch

from rkdsc_core.channel import ber_theory, demodulate, modulate, simulate_ber


class TestModulation:
    @pytest.mark.parametrize("modulation", ["bpsk", "qpsk"])
    def test_unit_symbol_energy_and_round_trip(self, modulation: str) -> None:
        bits = torch.rand(2, 1000) < 0.5
        z = modulate(bits, modulation)  # type: ignore[arg-type]
        assert torch.allclose(z.abs(), torch.ones_like(z.abs()))
        assert torch.equal(demodulate(z, modulation), bits)  # type: ignore[arg-type]

    def test_unknown_modulation_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="modulation"):
            modulate(torch.zeros(1, 4, dtype=torch.bool), "16qam")  # type: ignore[arg-type]


class TestTheory:
    def test_known_values(self) -> None:
        # BPSK/AWGN at Eb/N0 = 0 dB: Q(sqrt(2)) = 0.0786496
        assert float(ber_theory(0.0, "bpsk", "awgn")) == pytest.approx(0.0786496, rel=1e-5)
        # QPSK at Es/N0 = 3.0103 dB is BPSK at 0 dB per bit.
        snr = 10 * math.log10(2)
        assert float(ber_theory(snr, "qpsk", "awgn")) == pytest.approx(0.0786496, rel=1e-5)
        # BPSK/Rayleigh at 10 dB: (1 - sqrt(10/11)) / 2
        assert float(ber_theory(10.0, "bpsk", "rayleigh")) == pytest.approx(
            0.5 * (1 - math.sqrt(10 / 11)), rel=1e-9
        )

    def test_rician_limits(self) -> None:
        snrs = np.array([0.0, 5.0, 10.0])
        k0 = ber_theory(snrs, "bpsk", "rician", k_factor=0.0)
        assert np.allclose(k0, ber_theory(snrs, "bpsk", "rayleigh"), rtol=1e-6)
        k_big = ber_theory(snrs, "qpsk", "rician", k_factor=1e4)
        assert np.allclose(k_big, ber_theory(snrs, "qpsk", "awgn"), rtol=0.02)

    @pytest.mark.parametrize("k_factor", [-2.0, math.nan, math.inf])
    def test_an_impossible_k_factor_is_refused(self, k_factor: float) -> None:
        with pytest.raises(ValueError, match="k_factor must be a finite K >= 0"):
            ber_theory(5.0, "bpsk", "rician", k_factor=k_factor)


# (channel, modulation, snr_db, fading): BER between ~1e-3 and ~0.2 so 4M bits suffice.
_CASES = [
    (ch, mod, snr, fading)
    for ch, fading in [("awgn", "fast"), ("rayleigh", "fast"), ("rician", "fast")]
    for mod in ("bpsk", "qpsk")
    for snr in ((0.0, 6.0) if ch == "awgn" else (0.0, 10.0, 20.0))
]


@pytest.mark.parametrize(("channel", "modulation", "snr_db", "fading"), _CASES)
def test_simulated_ber_matches_theory(
    channel: str, modulation: str, snr_db: float, fading: str
) -> None:
    p = simulate_ber(
        snr_db,
        modulation,
        channel,
        fading=fading,
        k_factor=3.0,  # type: ignore[arg-type]
        min_errors=2000,
        max_bits=4_000_000,
        seed=11,
    )
    # Bits of one QPSK symbol share a fading gain, so count half as many independent
    # trials; then allow 5 standard deviations of the binomial estimate.
    trials = p.bits / (2 if modulation == "qpsk" else 1)
    sigma = math.sqrt(p.ber_theory * (1 - p.ber_theory) / trials)
    assert abs(p.ber - p.ber_theory) < 5 * sigma, p


@pytest.mark.parametrize(
    ("channel", "snr_db"), [("rayleigh", 0.0), ("rayleigh", 10.0), ("rician", 10.0)]
)
def test_simulated_block_fading_ber_averages_over_fades(channel: str, snr_db: float) -> None:
    # One gain per 64-symbol row, not per frame: a frame spans ~1,500 fades. (One gain
    # per frame put a point on a handful of fades: 0.4 to 0.75 of theory.)
    p = simulate_ber(
        snr_db, "qpsk", channel, fading="block", k_factor=3.0,  # type: ignore[arg-type]
        min_errors=20_000, max_bits=2_000_000, seed=5,
    )  # fmt: skip
    blocks = p.bits / (64 * 2)
    assert blocks >= 1500
    # Errors within a block share its gain; the per-block error fraction has variance
    # <= E[p^2] <= theory / 2 (p <= 1/2). 5 sigma of its mean over the blocks.
    assert abs(p.ber - p.ber_theory) < 5 * math.sqrt(p.ber_theory / 2 / blocks), p


def test_block_symbols_must_fit_a_frame() -> None:
    with pytest.raises(ValueError, match="block_symbols"):
        simulate_ber(0.0, "qpsk", "rayleigh", fading="block", frame_bits=64, block_symbols=64)


def test_block_fading_average_ber_matches_theory() -> None:
    # One gain per frame: average over many short frames.
    errors = bits = 0
    from rkdsc_core.channel import Channel, ChannelConfig, equalize, frame_generators

    ch = Channel(ChannelConfig(model="rayleigh", fading="block"))
    gens = frame_generators(3, "block", range(20_000))
    b = torch.rand(20_000, 64, generator=torch.Generator().manual_seed(0)) < 0.5
    out = ch(modulate(b, "bpsk"), 10.0, generator=gens)
    errors = int((demodulate(equalize(out.y, out.h), "bpsk") != b).sum())
    bits = b.numel()
    theory = float(ber_theory(10.0, "bpsk", "rayleigh"))
    # Errors are correlated within a frame: 20k independent frames; 5 sigma of the
    # per-frame error fraction (variance <= theory).
    assert abs(errors / bits - theory) < 5 * math.sqrt(theory / 20_000)
