"""Tests of the CLIP ViT teacher and its open_clip / Hugging Face checkpoint loading."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from rkdsc_core.models.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ClipVisionBackbone,
    ClipVisionConfig,
    QuickGELU,
    VisionTransformer,
    hf_to_open_clip,
    load_visual_state_dict,
    open_clip_to_hf,
)
from rkdsc_core.models.complexity import count_parameters
from rkdsc_core.registry import create_model

TINY = ClipVisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2, output_dim=32)


@pytest.fixture
def model() -> ClipVisionBackbone:
    return ClipVisionBackbone(TINY).eval()


def _open_clip_state(model: ClipVisionBackbone) -> dict[str, Tensor]:
    # A full open_clip CLIP state dict: the image tower under visual.*, plus text-tower keys.
    state = {f"visual.{k}": v.clone() for k, v in model.visual.state_dict().items()}
    state["token_embedding.weight"] = torch.zeros(10, 8)
    state["logit_scale"] = torch.tensor(4.6)
    return state


def _hf_state(model: ClipVisionBackbone) -> dict[str, Tensor]:
    state = open_clip_to_hf(model.visual.state_dict())
    state["vision_model.embeddings.position_ids"] = torch.arange(TINY.grid_size**2 + 1)[None]
    state["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 8)
    state["logit_scale"] = torch.tensor(4.6)
    return state


def _hf_reference_embedding(state: Mapping[str, Tensor], pixels: Tensor, heads: int) -> Tensor:
    """Hugging Face CLIPVisionModelWithProjection's image embedding, written from its keys."""
    pre = "vision_model."
    x = F.conv2d(pixels, state[pre + "embeddings.patch_embedding.weight"], stride=TINY.patch_size)
    x = x.flatten(2).transpose(1, 2)
    cls = state[pre + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + state[pre + "embeddings.position_embedding.weight"]
    width = x.shape[-1]
    x = F.layer_norm(
        x, (width,), state[pre + "pre_layrnorm.weight"], state[pre + "pre_layrnorm.bias"]
    )
    for i in range(TINY.layers):
        p = f"{pre}encoder.layers.{i}."

        def lin(t: Tensor, name: str, p: str = p) -> Tensor:
            return F.linear(t, state[p + name + ".weight"], state[p + name + ".bias"])

        h = F.layer_norm(
            x, (width,), state[p + "layer_norm1.weight"], state[p + "layer_norm1.bias"]
        )
        b, n, _ = h.shape
        q, k, v = (
            lin(h, f"self_attn.{s}_proj").view(b, n, heads, -1).transpose(1, 2) for s in "qkv"
        )
        attn = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2)
        h = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, width)
        x = x + lin(h, "self_attn.out_proj")
        h = F.layer_norm(
            x, (width,), state[p + "layer_norm2.weight"], state[p + "layer_norm2.bias"]
        )
        h = lin(h, "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), "mlp.fc2")
    post = F.layer_norm(
        x[:, 0], (width,), state[pre + "post_layernorm.weight"], state[pre + "post_layernorm.bias"]
    )
    return post @ state["visual_projection.weight"].t()


class TestClipVisionBackbone:
    def test_output_shapes(self, model: ClipVisionBackbone) -> None:
        images = torch.rand(2, 3, 32, 32)
        tokens = model.forward_tokens(images)
        assert tokens.shape == (2, 17, 64)
        assert model.pool(tokens).shape == (2, 32)
        assert model(images).shape == (2, 10)

    def test_feature_dim_is_pooled_and_token_dim_is_width(self, model: ClipVisionBackbone) -> None:
        assert (model.num_tokens, model.token_dim, model.feature_dim) == (17, 64, 32)

    def test_pool_is_projected_class_token(self, model: ClipVisionBackbone) -> None:
        tokens = torch.randn(2, 17, 64)
        torch.testing.assert_close(model.pool(tokens), tokens[:, 0] @ model.visual.proj)

    def test_other_sizes_are_resized(self, model: ClipVisionBackbone) -> None:
        assert model.forward_tokens(torch.rand(1, 3, 64, 48)).shape == (1, 17, 64)

    def test_example_inputs_are_native_size(self, model: ClipVisionBackbone) -> None:
        (images,) = model.example_inputs(2)
        assert images.shape == (2, 3, 32, 32)

    def test_normalises_with_clip_statistics(self, model: ClipVisionBackbone) -> None:
        images = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
        assert model.normalize(images).abs().max() < 1e-6
        torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor(CLIP_STD))

    def test_backward_reaches_every_parameter(self) -> None:
        model = ClipVisionBackbone(TINY).train()
        model(torch.rand(2, 3, 32, 32)).square().sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name

    def test_quick_gelu_follows_config(self) -> None:
        fast = ClipVisionBackbone(TINY)
        exact = ClipVisionBackbone(dataclasses.replace(TINY, quick_gelu=False))
        assert any(isinstance(m, QuickGELU) for m in fast.modules())
        assert not any(isinstance(m, torch.nn.GELU) for m in fast.modules())
        assert any(isinstance(m, torch.nn.GELU) for m in exact.modules())
        assert not any(isinstance(m, QuickGELU) for m in exact.modules())

    def test_wrong_channel_count_raises(self, model: ClipVisionBackbone) -> None:
        with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
            model(torch.rand(1, 1, 32, 32))

    def test_uint8_input_raises(self, model: ClipVisionBackbone) -> None:
        with pytest.raises(TypeError, match="float"):
            model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))

    def test_wrong_ndim_raises(self, model: ClipVisionBackbone) -> None:
        with pytest.raises(ValueError, match="shape"):
            model(torch.rand(3, 32, 32))


class TestClipVitB32:
    def test_vision_tower_has_87_8m_parameters(self) -> None:
        params = count_parameters(VisionTransformer(ClipVisionConfig()))
        assert abs(params - 87.8e6) < 0.1e6

    def test_default_config_is_vit_b32(self) -> None:
        cfg = ClipVisionConfig()
        assert (cfg.image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads) == (
            224,
            32,
            768,
            12,
            12,
        )
        assert (cfg.output_dim, cfg.quick_gelu, cfg.grid_size) == (512, True, 7)

    def test_warns_without_checkpoint(self, caplog: pytest.LogCaptureFixture) -> None:
        small = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "heads": 2}
        with caplog.at_level(logging.WARNING, logger="rkdsc_core.models.clip"):
            create_model("clip-vit-b32", **small)
        assert "random weights" in caplog.text


class TestClipVisionConfig:
    def test_round_trips_through_json(self) -> None:
        assert ClipVisionConfig(**json.loads(json.dumps(dataclasses.asdict(TINY)))) == TINY

    @pytest.mark.parametrize(
        ("overrides", "match"),
        [({"patch_size": 30}, "patch_size"), ({"heads": 5}, "heads"), ({"num_classes": 0}, "num")],
    )
    def test_invalid_value_raises(self, overrides: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            ClipVisionConfig(**overrides)

    def test_tiny_is_registered(self) -> None:
        model = create_model("clip-vit-tiny")
        assert isinstance(model, ClipVisionBackbone)
        assert model.config == TINY


class TestKeyConversion:
    def test_hf_round_trip_is_identity(self, model: ClipVisionBackbone) -> None:
        state = model.visual.state_dict()
        back = hf_to_open_clip(open_clip_to_hf(state))
        assert set(back) == set(state)
        for k, v in state.items():
            assert torch.equal(back[k], v), k

    def test_hf_names_and_shapes(self, model: ClipVisionBackbone) -> None:
        hf = open_clip_to_hf(model.visual.state_dict())
        assert hf["visual_projection.weight"].shape == (32, 64)  # transposed proj
        assert hf["vision_model.encoder.layers.1.self_attn.k_proj.weight"].shape == (64, 64)
        assert "vision_model.pre_layrnorm.weight" in hf
        assert "vision_model.embeddings.position_embedding.weight" in hf

    def test_hf_semantics_match_reference_forward(self, model: ClipVisionBackbone) -> None:
        # Our tower, loaded from HF keys, computes HF's image embedding.
        hf = open_clip_to_hf(model.visual.state_dict())
        pixels = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            ours = model.pool(model.visual(pixels))
            ref = _hf_reference_embedding(hf, pixels, heads=TINY.heads)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


class TestCheckpointLoading:
    def _assert_same_outputs(self, source: ClipVisionBackbone, loaded: ClipVisionBackbone) -> None:
        images = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(source.forward_tokens(images), loaded.eval().forward_tokens(images))
            tokens = source.forward_tokens(images)
            assert torch.equal(source.pool(tokens), loaded.pool(tokens))

    def test_open_clip_bin(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(_open_clip_state(model), path)
        self._assert_same_outputs(model, ClipVisionBackbone(TINY, checkpoint=path))

    def test_open_clip_safetensors(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        path = tmp_path / "open_clip_model.safetensors"
        save_file(_open_clip_state(model), str(path))
        self._assert_same_outputs(model, ClipVisionBackbone(TINY, checkpoint=path))

    def test_open_clip_training_checkpoint(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        path = tmp_path / "epoch_1.pt"
        state = {f"module.{k}": v for k, v in _open_clip_state(model).items()}
        torch.save({"epoch": 1, "state_dict": state}, path)
        self._assert_same_outputs(model, ClipVisionBackbone(TINY, checkpoint=path))

    def test_hf_safetensors_directory(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        save_file(_hf_state(model), str(tmp_path / "model.safetensors"))
        self._assert_same_outputs(model, ClipVisionBackbone(TINY, checkpoint=tmp_path))

    def test_hf_bin_directory(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        torch.save(_hf_state(model), tmp_path / "pytorch_model.bin")
        self._assert_same_outputs(model, ClipVisionBackbone(TINY, checkpoint=tmp_path))

    def test_registry_passes_checkpoint(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        path = tmp_path / "w.safetensors"
        save_file(_open_clip_state(model), str(path))
        loaded = create_model("clip-vit-tiny", checkpoint=path)
        assert isinstance(loaded, ClipVisionBackbone)
        self._assert_same_outputs(model, loaded)

    def test_load_visual_state_dict_strips_text_tower(
        self, model: ClipVisionBackbone, tmp_path: Path
    ) -> None:
        path = tmp_path / "w.safetensors"
        save_file(_open_clip_state(model), str(path))
        assert set(load_visual_state_dict(path)) == set(model.visual.state_dict())

    def test_missing_keys_are_listed(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        state = _open_clip_state(model)
        del state["visual.ln_post.weight"]
        save_file(state, str(tmp_path / "w.safetensors"))
        with pytest.raises(ValueError, match=r"1 missing keys \(ln_post.weight\)"):
            ClipVisionBackbone(TINY, checkpoint=tmp_path / "w.safetensors")

    def test_unexpected_keys_are_listed(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        state = _open_clip_state(model)
        state["visual.attnpool.weight"] = torch.zeros(2)
        save_file(state, str(tmp_path / "w.safetensors"))
        with pytest.raises(ValueError, match=r"1 unexpected keys \(attnpool.weight\)"):
            ClipVisionBackbone(TINY, checkpoint=tmp_path / "w.safetensors")

    def test_wrong_config_reports_shapes(self, model: ClipVisionBackbone, tmp_path: Path) -> None:
        save_file(_open_clip_state(model), str(tmp_path / "w.safetensors"))
        other = dataclasses.replace(TINY, output_dim=16)
        with pytest.raises(ValueError, match="proj"):
            ClipVisionBackbone(other, checkpoint=tmp_path / "w.safetensors")

    def test_directory_without_weights_raises(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
            ClipVisionBackbone(TINY, checkpoint=tmp_path)

    def test_missing_file_raises(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            ClipVisionBackbone(TINY, checkpoint=tmp_path / "nope.bin")

    def test_unreadable_file_raises(self, tmp_path: Path) -> None:
        path = tmp_path / "ViT-B-32.pt"
        path.write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="weights_only"):
            ClipVisionBackbone(TINY, checkpoint=path)

    def test_unknown_layout_raises(self, tmp_path: Path) -> None:
        save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
        with pytest.raises(ValueError, match="neither"):
            ClipVisionBackbone(TINY, checkpoint=tmp_path / "w.safetensors")
