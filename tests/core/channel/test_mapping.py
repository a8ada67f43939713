import pytest
import torch

from rkdsc_core.channel import complex_to_real, normalize_power, real_to_complex, snr_db_to_n0


class TestRealToComplex:
    def test_pairs_consecutive_features(self) -> None:
        z = real_to_complex(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        assert z.dtype == torch.complex64
        assert torch.equal(z, torch.tensor([[1 + 2j, 3 + 4j]], dtype=torch.complex64))

    def test_round_trip(self) -> None:
        x = torch.randn(3, 10)
        assert torch.equal(complex_to_real(real_to_complex(x)), x)

    def test_odd_length_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="even"):
            real_to_complex(torch.randn(2, 5))

    def test_integer_input_is_rejected(self) -> None:
        with pytest.raises(TypeError, match="real float"):
            real_to_complex(torch.ones(2, 4, dtype=torch.int64))


class TestNormalizePower:
    def test_unit_energy_per_row(self) -> None:
        z = torch.randn(4, 16, dtype=torch.complex64) * 7
        out = normalize_power(z)
        assert torch.allclose(out.abs().square().mean(1), torch.ones(4), atol=1e-5)

    def test_energy_counts_only_sent_symbols(self) -> None:
        z = torch.randn(3, 16, dtype=torch.complex64)
        lengths = torch.tensor([4, 8, 16])
        mask = torch.arange(16).unsqueeze(0) < lengths.unsqueeze(1)
        out = normalize_power(z, mask)
        energy = out.abs().square()
        assert torch.allclose(energy.sum(1) / lengths, torch.ones(3), atol=1e-5)
        assert torch.all(out[~mask] == 0)

    def test_empty_row_is_rejected(self) -> None:
        z = torch.randn(2, 4, dtype=torch.complex64)
        mask = torch.tensor([[True] * 4, [False] * 4])
        with pytest.raises(ValueError, match="at least one symbol"):
            normalize_power(z, mask)


class TestSnrToN0:
    def test_convention(self) -> None:
        n0 = snr_db_to_n0(torch.tensor([0.0, 10.0, -10.0]))
        assert torch.allclose(n0, torch.tensor([1.0, 0.1, 10.0]))

    @pytest.mark.parametrize("bad", [-31.0, 61.0, float("nan"), float("inf")])
    def test_out_of_range_is_rejected(self, bad: float) -> None:
        with pytest.raises(ValueError, match="snr_db"):
            snr_db_to_n0(bad)

    def test_wrong_batch_shape_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="shape"):
            snr_db_to_n0(torch.zeros(3), batch=4)
