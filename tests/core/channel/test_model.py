import pytest
import torch

from rkdsc_core.channel import (
    Channel,
    ChannelConfig,
    frame_generator,
    frame_generators,
    normalize_power,
)


def _symbols(batch: int = 4, n: int = 64) -> torch.Tensor:
    return normalize_power(torch.randn(batch, n, dtype=torch.complex64))


class TestChannelConfig:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("model", "rayleigh-ish"),
            ("fading", "slow"),
            ("k_factor", -1.0),
            ("erasure_prob", 1.0),
            ("frame_loss_prob", -0.1),
        ],
    )
    def test_invalid_values_name_the_field(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=field):
            ChannelConfig(**{field: value})  # type: ignore[arg-type]


class TestChannel:
    def test_awgn_output_shapes_and_side_information(self) -> None:
        out = Channel()(_symbols(), 10.0)
        assert out.y.shape == (4, 64) and out.y.dtype == torch.complex64
        assert torch.all(out.h == 1)
        assert torch.allclose(out.n0, torch.full((4,), 0.1))
        assert out.received.all() and not out.frame_lost.any()

    def test_noise_is_y_minus_hx(self) -> None:
        x = _symbols(2, 40_000)
        out = Channel(ChannelConfig(model="rayleigh"))(x, 3.0, generator=frame_generator(0, 0, 0))
        noise = out.y - out.h * x
        assert abs(float(noise.abs().square().mean()) / float(out.n0[0]) - 1) < 0.03

    def test_per_row_snr(self) -> None:
        x = torch.zeros(2, 40_000, dtype=torch.complex64)
        out = Channel()(x, torch.tensor([0.0, 20.0]), generator=frame_generator(0, 0, 0))
        measured = out.y.abs().square().mean(1)
        assert torch.allclose(measured, torch.tensor([1.0, 0.01]), rtol=0.03)

    def test_erasure_rate_and_zeroed_symbols(self) -> None:
        ch = Channel(ChannelConfig(erasure_prob=0.25))
        out = ch(_symbols(8, 4096), 10.0, generator=frame_generator(0, 0, 0))
        assert abs(float((~out.received).float().mean()) - 0.25) < 0.02
        assert torch.all(out.y[~out.received] == 0)
        assert not out.frame_lost.any()

    def test_frame_loss_drops_whole_frames(self) -> None:
        ch = Channel(ChannelConfig(frame_loss_prob=0.3))
        gens = frame_generators(0, "link", range(2000))
        out = ch(_symbols(2000, 4), 10.0, generator=gens)
        assert abs(float(out.frame_lost.float().mean()) - 0.3) < 0.04
        assert torch.all(~out.received[out.frame_lost])
        assert torch.all(out.received[~out.frame_lost])

    def test_unsent_symbols_are_not_received(self) -> None:
        mask = torch.arange(64).expand(4, 64) < 16
        out = Channel()(normalize_power(_symbols(), mask), 10.0, mask=mask)
        assert torch.equal(out.received, mask)
        assert torch.all(out.y[:, 16:] == 0)

    def test_gradient_flows_through_fading(self) -> None:
        x = _symbols(2, 8).requires_grad_(True)
        Channel(ChannelConfig(model="rician", k_factor=2.0))(x, 5.0).y.abs().sum().backward()
        assert x.grad is not None and torch.isfinite(torch.view_as_real(x.grad)).all()

    def test_real_input_is_rejected(self) -> None:
        with pytest.raises(TypeError, match="complex"):
            Channel()(torch.randn(2, 8), 10.0)

    def test_nan_input_is_rejected(self) -> None:
        x = _symbols(2, 8)
        x[0, 3] = complex("nan")
        with pytest.raises(ValueError, match="NaN"):
            Channel()(x, 10.0)

    def test_wrong_rank_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="2 dims"):
            Channel()(torch.zeros(8, dtype=torch.complex64), 10.0)

    def test_snr_out_of_range_is_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"\[-30, 60\]"):
            Channel()(_symbols(), 75.0)

    def test_bad_mask_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="mask"):
            Channel()(_symbols(), 10.0, mask=torch.ones(4, 64))


class TestReproducibility:
    def test_same_seed_link_seq_same_impairment(self) -> None:
        ch = Channel(ChannelConfig(model="rayleigh", erasure_prob=0.1))
        x = _symbols(1, 32)
        a = ch(x, 5.0, generator=frame_generator(7, "a", 3))
        b = ch(x, 5.0, generator=frame_generator(7, "a", 3))
        assert torch.equal(a.y, b.y) and torch.equal(a.received, b.received)

    def test_different_sequence_numbers_differ(self) -> None:
        x = _symbols(1, 32)
        a = Channel()(x, 5.0, generator=frame_generator(7, "a", 3))
        b = Channel()(x, 5.0, generator=frame_generator(7, "a", 4))
        c = Channel()(x, 5.0, generator=frame_generator(7, "b", 3))
        assert not torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)

    @pytest.mark.parametrize(
        "config",
        [
            ChannelConfig(model="rician", k_factor=1.0, fading="fast", erasure_prob=0.2),
            ChannelConfig(model="rayleigh", erasure_prob=0.1, frame_loss_prob=0.3),
            ChannelConfig(frame_loss_prob=0.3),
        ],
    )
    def test_frame_does_not_depend_on_its_batch(self, config: ChannelConfig) -> None:
        ch = Channel(config)
        x = _symbols(5, 32)
        batch = ch(x, 5.0, generator=frame_generators(1, 9, range(5)))
        for i in range(5):
            alone = ch(x[i : i + 1], 5.0, generator=frame_generator(1, 9, i))
            for field in ("y", "h", "received", "frame_lost"):
                assert torch.equal(getattr(batch, field)[i : i + 1], getattr(alone, field))

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    @pytest.mark.parametrize("model", ["awgn", "rayleigh"])
    def test_cpu_generators_impair_a_gpu_frame_as_a_cpu_one(self, model: str) -> None:
        ch = Channel(ChannelConfig(model=model, erasure_prob=0.1))  # type: ignore[arg-type]
        x = _symbols(5, 72)
        cpu = ch(x, 3.0, generator=frame_generators(1, "eval", range(5)))
        gpu = ch(x.cuda(), 3.0, generator=frame_generators(1, "eval", range(5)))
        assert gpu.y.device.type == "cuda"
        assert torch.allclose(gpu.y.cpu(), cpu.y, atol=1e-6)
        assert torch.allclose(gpu.h.cpu(), cpu.h, atol=1e-6)
        assert torch.equal(gpu.received.cpu(), cpu.received)

    def test_global_rng_is_untouched(self) -> None:
        x = _symbols()
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        Channel(ChannelConfig(model="rayleigh"))(x, 5.0, generator=frame_generator(0, 0, 0))
        assert torch.equal(torch.rand(3), expected)

    def test_generator_count_must_match_batch(self) -> None:
        with pytest.raises(ValueError, match="generators"):
            Channel()(_symbols(4, 8), 5.0, generator=frame_generators(0, 0, range(3)))
