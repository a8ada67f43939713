"""Tests of the CIFAR ResNet-18 teacher."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rkdsc_core.models.complexity import count_parameters
from rkdsc_core.models.resnet import ResNet18Cifar, ResNetCifarConfig
from rkdsc_core.registry import create_model


@pytest.fixture
def model() -> ResNet18Cifar:
    return ResNet18Cifar(ResNetCifarConfig(width=8, num_classes=5))


class TestResNet18Cifar:
    def test_output_shapes(self, model: ResNet18Cifar) -> None:
        images = torch.rand(2, 3, 32, 32)
        tokens = model.forward_tokens(images)
        assert tokens.shape == (2, 16, 64)
        assert model.pool(tokens).shape == (2, 64)
        assert model(images).shape == (2, 5)

    def test_attributes_describe_tokens(self, model: ResNet18Cifar) -> None:
        assert (model.num_tokens, model.feature_dim, model.num_classes) == (16, 64, 5)

    def test_other_sizes_are_resized_to_native(self, model: ResNet18Cifar) -> None:
        assert model.forward_tokens(torch.rand(1, 3, 48, 40)).shape == (1, 16, 64)

    def test_example_inputs_are_native_cifar(self, model: ResNet18Cifar) -> None:
        (images,) = model.example_inputs(3)
        assert images.shape == (3, 3, 32, 32)
        assert images.dtype == torch.float32

    def test_backward_reaches_every_parameter(self, model: ResNet18Cifar) -> None:
        model(torch.rand(2, 3, 32, 32)).square().sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name

    def test_default_width_has_resnet18_parameter_count(self) -> None:
        assert count_parameters(ResNet18Cifar()) == 11_173_962

    def test_width_32_has_quarter_parameters(self) -> None:
        assert count_parameters(ResNet18Cifar(ResNetCifarConfig(width=32))) == 2_797_610

    def test_wrong_channel_count_raises(self, model: ResNet18Cifar) -> None:
        with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
            model(torch.rand(2, 1, 32, 32))

    def test_uint8_input_raises(self, model: ResNet18Cifar) -> None:
        with pytest.raises(TypeError, match="float"):
            model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))

    def test_wrong_ndim_raises(self, model: ResNet18Cifar) -> None:
        with pytest.raises(ValueError, match="shape"):
            model(torch.rand(3, 32, 32))


class TestResNetCifarConfig:
    def test_round_trips_through_json(self) -> None:
        cfg = ResNetCifarConfig(width=16, num_classes=100)
        assert ResNetCifarConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg

    def test_model_keeps_its_config(self, model: ResNet18Cifar) -> None:
        assert model.config == ResNetCifarConfig(width=8, num_classes=5)

    @pytest.mark.parametrize(
        ("field", "value"), [("width", 0), ("num_classes", 0), ("image_size", 30)]
    )
    def test_invalid_value_raises(self, field: str, value: int) -> None:
        with pytest.raises(ValueError, match=field):
            ResNetCifarConfig(**{field: value})


class TestResNetRegistry:
    def test_resnet18_cifar_defaults(self) -> None:
        model = create_model("resnet18-cifar", width=8)
        assert isinstance(model, ResNet18Cifar)
        assert model.config == ResNetCifarConfig(width=8)

    def test_w32_variant_has_width_32(self) -> None:
        model = create_model("resnet18-cifar-w32", num_classes=100)
        assert isinstance(model, ResNet18Cifar)
        assert (model.config.width, model.feature_dim, model.num_classes) == (32, 256, 100)

    def test_unknown_override_raises(self) -> None:
        with pytest.raises(TypeError, match="depth"):
            create_model("resnet18-cifar", depth=34)
