import pytest
import torch

from rkdsc_core.channel import (
    Channel,
    ChannelConfig,
    ChannelKnowledge,
    equalize,
    estimate_ls,
    frame_generator,
    insert_pilots,
    normalize_power,
    pilot_sequence,
    receiver_csi,
    split_pilots,
)


class TestPilots:
    def test_unit_modulus(self) -> None:
        p = pilot_sequence(17)
        assert p.dtype == torch.complex64
        assert torch.allclose(p.abs(), torch.ones(17))

    def test_insert_then_split(self) -> None:
        x = torch.randn(3, 10, dtype=torch.complex64)
        p = pilot_sequence(4)
        y_p, y_d = split_pilots(insert_pilots(x, p), 4)
        assert torch.equal(y_d, x) and torch.equal(y_p, p.expand(3, 4))

    def test_too_few_pilots_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="num_pilots"):
            pilot_sequence(1)


class TestLeastSquares:
    def test_estimates_are_unbiased_under_block_fading(self) -> None:
        p = pilot_sequence(16)
        x = insert_pilots(normalize_power(torch.randn(4000, 8, dtype=torch.complex64)), p)
        ch = Channel(ChannelConfig(model="rayleigh", fading="block"))
        out = ch(x, 10.0, generator=frame_generator(0, 0, 0))
        h_hat, n0_hat = estimate_ls(split_pilots(out.y, 16)[0], p)
        err = h_hat - out.h[:, 0]
        # LS error variance is N0 / P = 0.1 / 16.
        assert abs(float(err.abs().square().mean()) - 0.1 / 16) < 0.1 / 16 * 0.1
        assert abs(float(err.mean().abs())) < 0.01
        assert abs(float(n0_hat.mean()) - 0.1) < 0.005

    def test_pilot_count_mismatch_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="pilots"):
            estimate_ls(torch.zeros(2, 5, dtype=torch.complex64), pilot_sequence(4))


class TestReceiverCSI:
    def _out(self, knowledge_pilots: int = 0) -> tuple[torch.Tensor, object]:
        x = normalize_power(torch.randn(256, 32, dtype=torch.complex64))
        if knowledge_pilots:
            x = insert_pilots(x, pilot_sequence(knowledge_pilots))
        ch = Channel(ChannelConfig(model="rayleigh"))
        return x, ch(x, 15.0, generator=frame_generator(0, 0, 0))

    def test_perfect_returns_the_truth(self) -> None:
        _, out = self._out()
        csi = receiver_csi("perfect", out)  # type: ignore[arg-type]
        assert torch.equal(csi.h, out.h) and torch.allclose(csi.snr_db, torch.full((256,), 15.0))  # type: ignore[attr-defined]

    def test_none_assumes_unit_gain_and_estimates_snr_blindly(self) -> None:
        x = normalize_power(torch.randn(64, 4096, dtype=torch.complex64))
        out = Channel()(x, 5.0, generator=frame_generator(0, 0, 1))
        csi = receiver_csi(ChannelKnowledge.NONE, out)
        assert torch.all(csi.h == 1)
        assert abs(float(csi.snr_db.mean()) - 5.0) < 0.3

    def test_pilot_estimate_is_close_and_covers_data_only(self) -> None:
        _, out = self._out(knowledge_pilots=8)
        csi = receiver_csi("pilot", out, pilots=pilot_sequence(8))  # type: ignore[arg-type]
        assert csi.h.shape == (256, 32)
        assert float((csi.h - out.h[:, 8:]).abs().square().mean()) < 0.01  # type: ignore[attr-defined]
        assert abs(float(csi.snr_db.median()) - 15.0) < 1.5

    def test_pilot_without_sequence_is_rejected(self) -> None:
        _, out = self._out(knowledge_pilots=8)
        with pytest.raises(ValueError, match="pilot"):
            receiver_csi("pilot", out)  # type: ignore[arg-type]

    def test_unknown_knowledge_is_rejected(self) -> None:
        _, out = self._out()
        with pytest.raises(ValueError, match="oracle"):
            receiver_csi("oracle", out)  # type: ignore[arg-type]


class TestEqualize:
    def test_zero_forcing_inverts_the_gain(self) -> None:
        h = torch.randn(2, 8, dtype=torch.complex64)
        x = torch.randn(2, 8, dtype=torch.complex64)
        assert torch.allclose(equalize(h * x, h), x, atol=1e-5)

    def test_mmse_shrinks_towards_zero(self) -> None:
        h = torch.ones(1, 4, dtype=torch.complex64)
        y = torch.ones(1, 4, dtype=torch.complex64)
        assert torch.allclose(equalize(y, h, torch.tensor([1.0])).real, torch.full((1, 4), 0.5))


class TestDegenerateFrames:
    def test_erased_pilots_are_left_out_of_the_estimate(self) -> None:
        p = pilot_sequence(8)
        h = torch.tensor([0.5 - 0.5j], dtype=torch.complex64)
        y = h.unsqueeze(1) * p.unsqueeze(0)
        received = torch.ones(1, 8, dtype=torch.bool)
        received[0, :3] = False
        y = y * received  # erased pilots arrive as 0
        h_hat, n0_hat = estimate_ls(y, p, received)
        assert torch.allclose(h_hat, h, atol=1e-6) and float(n0_hat[0]) < 1e-10

    def test_frame_without_pilots_gets_no_estimate_and_no_nan(self) -> None:
        p = pilot_sequence(4)
        y = torch.zeros(2, 4, dtype=torch.complex64)
        received = torch.tensor([[False] * 4, [True, False, False, False]])
        h_hat, n0_hat = estimate_ls(y, p, received)
        assert torch.all(h_hat == 0)
        assert torch.allclose(n0_hat, torch.full((2,), 1000.0))

    def test_lost_frames_decode_to_finite_values(self) -> None:
        p = pilot_sequence(4)
        x = insert_pilots(normalize_power(torch.randn(16, 8, dtype=torch.complex64)), p)
        ch = Channel(ChannelConfig(frame_loss_prob=0.5, erasure_prob=0.5))
        out = ch(x, 10.0, generator=frame_generator(0, 0, 0))
        assert out.frame_lost.any()
        csi = receiver_csi("pilot", out, pilots=p)
        x_hat = equalize(split_pilots(out.y, 4)[1], csi.h, csi.n0)
        assert torch.isfinite(torch.view_as_real(x_hat)).all()
        assert torch.isfinite(csi.snr_db).all()


def test_blind_estimate_of_a_frame_with_nothing_received_is_the_floor() -> None:
    x = normalize_power(torch.randn(2, 16, dtype=torch.complex64))
    out = Channel()(x, 20.0, generator=frame_generator(0, 0, 2))
    out = out._replace(received=torch.tensor([[False] * 16, [True] * 16]))
    csi = receiver_csi(ChannelKnowledge.NONE, out)
    assert float(csi.snr_db[0]) == -30.0  # nothing to go on: the cautious end, as pilots do
    assert float(csi.snr_db[1]) > 5.0  # 20 dB, read from 16 symbols


def test_zero_forcing_without_an_estimate_gives_zero_not_a_blow_up() -> None:
    y = torch.tensor([[1 + 1j, 2 - 1j]], dtype=torch.complex64)
    h = torch.tensor([[0j, 0.5j]], dtype=torch.complex64)
    z = equalize(y, h)
    assert z[0, 0] == 0
    assert torch.allclose(z[0, 1], y[0, 1] / h[0, 1])
