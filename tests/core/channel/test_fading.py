import math

import pytest
import torch

from rkdsc_core.channel import frame_generator, rayleigh_gains, rician_gains


class TestRayleigh:
    def test_unit_mean_power(self) -> None:
        h = rayleigh_gains(1, 200_000, "fast", frame_generator(0, 0, 0))
        assert abs(float(h.abs().square().mean()) - 1.0) < 0.02

    def test_power_is_exponential(self) -> None:
        h = rayleigh_gains(1, 200_000, "fast", frame_generator(0, 0, 1))
        assert abs(float((h.abs().square() > 1.0).float().mean()) - math.exp(-1)) < 0.01

    def test_block_fading_is_constant_per_frame(self) -> None:
        h = rayleigh_gains(5, 32, "block", frame_generator(0, 0, 2))
        assert torch.all(h == h[:, :1])
        assert h[:, 0].real.unique().numel() == 5

    def test_fast_fading_varies_per_symbol(self) -> None:
        h = rayleigh_gains(1, 32, "fast", frame_generator(0, 0, 3))
        assert h.real.unique().numel() == 32


class TestRician:
    @pytest.mark.parametrize("k", [0.5, 3.0, 10.0])
    def test_unit_power_and_k_factor(self, k: float) -> None:
        h = rician_gains(1, 200_000, "fast", k, frame_generator(0, 1, 0))
        assert abs(float(h.abs().square().mean()) - 1.0) < 0.02
        los = h.mean()
        k_hat = float(los.abs().square() / (h - los).abs().square().mean())
        assert abs(k_hat - k) / k < 0.05

    @pytest.mark.parametrize("k", [-1.0, float("nan")])
    def test_bad_k_factor_is_rejected(self, k: float) -> None:
        with pytest.raises(ValueError, match="k_factor"):
            rician_gains(1, 4, "fast", k)

    def test_bad_fading_kind_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="fading"):
            rician_gains(1, 4, "slow", 1.0)  # type: ignore[arg-type]
