"""Tests of the FastNet teacher (whitening stem, Dirac-initialised conv groups)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rkdsc_core.checkpoint import load_model, save_checkpoint
from rkdsc_core.models.complexity import count_parameters
from rkdsc_core.models.fastnet import FastNetCifar, FastNetConfig
from rkdsc_core.registry import create_model


@pytest.fixture
def model() -> FastNetCifar:
    return FastNetCifar(FastNetConfig(widths=(8, 16, 24), num_classes=5))


def _correlated_images(n: int = 64) -> torch.Tensor:
    """Smooth images (neighbouring pixels and channels strongly correlated), in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 1, 8, 8, generator=g)
    x = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


class TestFastNet:
    def test_output_shapes(self, model: FastNetCifar) -> None:
        images = torch.rand(2, 3, 32, 32)
        tokens = model.forward_tokens(images)
        assert tokens.shape == (2, 9, 24)  # 32 -> 31 (2x2 stem) -> 15 -> 7 -> 3
        assert (model.num_tokens, model.feature_dim) == (9, 24)
        assert model(images).shape == (2, 5)

    def test_pool_is_the_maximum_over_positions(self, model: FastNetCifar) -> None:
        tokens = torch.randn(2, 9, 24)
        torch.testing.assert_close(model.pool(tokens), tokens.max(dim=1).values)

    def test_default_size(self) -> None:
        net = create_model("fastnet-cifar")
        assert isinstance(net, FastNetCifar)
        assert count_parameters(net) == 3_006_136
        assert (net.num_tokens, net.feature_dim) == (9, 320)

    def test_whitening_decorrelates_the_patches(self, model: FastNetCifar) -> None:
        images = _correlated_images()
        model.init_whitening(images)
        out = model.whiten(model.normalize(images))[:, :12] - model.whiten.bias[:12, None, None]
        feats = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
        moment = feats.T @ feats / len(feats)
        # Identity up to the eps regularisation (which only shrinks the smallest directions).
        off = moment - torch.diag(moment.diag())
        assert off.abs().max() < 1e-6
        assert moment.diag()[:6].min() > 0.9 and moment.diag().max() < 1.0 + 1e-6

    def test_stem_filters_come_in_sign_pairs(self, model: FastNetCifar) -> None:
        model.init_whitening(_correlated_images())
        w = model.whiten.weight
        torch.testing.assert_close(w[12:], -w[:12])

    def test_only_the_norm_shifts_and_convs_learn(self, model: FastNetCifar) -> None:
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert "whiten.weight" in frozen
        assert all(n.endswith(("norm1.weight", "norm2.weight")) for n in frozen - {"whiten.weight"})
        assert len(frozen) == 1 + 2 * 3
        model(torch.rand(2, 3, 32, 32)).square().sum().backward()
        for name, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, name

    def test_convs_start_as_identity_on_their_first_channels(self) -> None:
        group = FastNetCifar(FastNetConfig(widths=(8, 16, 24))).groups[1]
        x = torch.randn(1, 8, 5, 5)
        torch.testing.assert_close(group.conv1(x)[:, :8], x)

    def test_survives_a_checkpoint_round_trip(self, model: FastNetCifar, tmp_path) -> None:  # type: ignore[no-untyped-def]
        model.init_whitening(_correlated_images(8))
        model.eval()
        save_checkpoint(tmp_path / "t", model, name="fastnet-cifar", config=model.config)
        assert json.loads((tmp_path / "t.json").read_text())["config"]["widths"] == [8, 16, 24]
        loaded = load_model(tmp_path / "t")
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(loaded(x), model(x))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"widths": (8, 16)}, "three positive"),
            ({"widths": (8, 0, 16)}, "three positive"),
            ({"image_size": 8}, "image_size"),
            ({"bn_momentum": 0.0}, "bn_momentum"),
            ({"num_classes": 0}, "num_classes"),
        ],
    )
    def test_bad_config_is_rejected(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            FastNetConfig(**kwargs)  # type: ignore[arg-type]
