import pytest
import torch

from rkdsc_core.distill import FeatureProjector, feature_loss, kd_loss


class TestKDLoss:
    def test_zero_for_identical_logits(self) -> None:
        x = torch.randn(4, 10)
        assert float(kd_loss(x, x)) == pytest.approx(0.0, abs=1e-6)

    def test_positive_and_differentiable(self) -> None:
        s = torch.randn(4, 10, requires_grad=True)
        loss = kd_loss(s, torch.randn(4, 10), temperature=2.0)
        loss.backward()
        assert float(loss.detach()) > 0 and s.grad is not None

    @pytest.mark.parametrize("temperature", [1.0, 4.0])
    def test_is_t_squared_times_kl_from_the_teacher_batch_mean(self, temperature: float) -> None:
        # Hinton et al.: T^2 KL(p_T || p_S) at temperature T, averaged over the batch; not
        # KL(p_S || p_T), and not without the T^2 that keeps gradients comparable across T.
        g = torch.Generator().manual_seed(0)
        s, t = torch.randn(5, 10, generator=g), 3 * torch.randn(5, 10, generator=g)
        log_ps, log_pt = (torch.log_softmax(x / temperature, dim=-1) for x in (s, t))
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1).mean()
        want = float(temperature**2 * kl)
        assert float(kd_loss(s, t, temperature=temperature)) == pytest.approx(want, rel=1e-5)

    def test_shape_mismatch_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="same shape"):
            kd_loss(torch.randn(2, 10), torch.randn(2, 100))


class TestFeatureLoss:
    def test_scale_free(self) -> None:
        x = torch.randn(3, 8)
        assert float(feature_loss(x, 5 * x)) == pytest.approx(0.0, abs=1e-6)

    def test_projector_maps_dimensions(self) -> None:
        p = FeatureProjector(16, 64)
        assert p(torch.randn(2, 16)).shape == (2, 64)
        with pytest.raises(ValueError, match="project"):
            feature_loss(torch.randn(2, 16), torch.randn(2, 64))
