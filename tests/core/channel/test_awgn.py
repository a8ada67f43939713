import pytest
import torch

from rkdsc_core.channel import AWGN, frame_generator


class TestAWGN:
    def test_noise_variance_matches_snr(self) -> None:
        x = torch.zeros(4, 50_000, dtype=torch.complex64)
        y = AWGN()(x, torch.tensor([0.0, 5.0, 10.0, 20.0]), generator=frame_generator(1, 0, 0))
        n0 = y.abs().square().mean(1)
        expected = torch.tensor([1.0, 10**-0.5, 0.1, 0.01])
        # mean of 50k exponentials: relative std 1/sqrt(50k) = 0.45%; allow 3%.
        assert torch.allclose(n0, expected, rtol=0.03)

    def test_real_and_imaginary_parts_each_carry_half(self) -> None:
        x = torch.zeros(1, 100_000, dtype=torch.complex64)
        y = AWGN()(x, 0.0, generator=frame_generator(2, 0, 0))
        assert abs(float(y.real.var()) - 0.5) < 0.02
        assert abs(float(y.imag.var()) - 0.5) < 0.02
        assert abs(float((y.real * y.imag).mean())) < 0.01

    def test_gradient_flows_to_input(self) -> None:
        x = torch.randn(2, 8, dtype=torch.complex64, requires_grad=True)
        AWGN()(x, 10.0).abs().sum().backward()
        assert x.grad is not None and torch.isfinite(torch.view_as_real(x.grad)).all()

    def test_real_or_misshapen_input_is_refused_by_name(self) -> None:
        with pytest.raises(TypeError, match="x must be complex"):
            AWGN()(torch.zeros(2, 8), 10.0)
        with pytest.raises(ValueError, match="x must have 2 dims"):
            AWGN()(torch.zeros(2, 3, 8, dtype=torch.complex64), 10.0)
