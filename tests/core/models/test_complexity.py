"""Tests of parameter and multiply-accumulate counting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.models.clip import ClipVisionBackbone, ClipVisionConfig
from rkdsc_core.models.complexity import count_macs, count_parameters
from rkdsc_core.models.resnet import ResNet18Cifar


class _SDPA(nn.Module):
    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class _MHAWithWeights(nn.Module):
    # need_weights=True takes nn.MultiheadAttention's explicit (bmm) path, not the fused one.
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=True)[0]  # type: ignore[no-any-return]


def _mha_macs(batch: int, length: int, width: int) -> int:
    # q/k/v and out projections + QK^T + AV.
    return batch * (4 * length * width * width + 2 * length * length * width)


class TestCountParameters:
    def test_counts_weights_and_biases(self) -> None:
        assert count_parameters(nn.Linear(4, 3)) == 15

    def test_shared_parameters_count_once(self) -> None:
        lin = nn.Linear(4, 4)
        assert count_parameters(nn.Sequential(lin, lin)) == 20

    def test_trainable_only_skips_frozen(self) -> None:
        model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
        model[0].requires_grad_(False)
        assert count_parameters(model, trainable_only=True) == 8


class TestCountMacs:
    def test_linear(self) -> None:
        assert count_macs(nn.Linear(8, 5), torch.rand(3, 8)) == 3 * 8 * 5

    def test_conv2d(self) -> None:
        conv = nn.Conv2d(3, 16, 3, padding=1)
        assert count_macs(conv, torch.rand(2, 3, 10, 10)) == 2 * 16 * 10 * 10 * 3 * 9

    def test_depthwise_conv2d(self) -> None:
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        assert count_macs(conv, torch.rand(1, 8, 6, 6)) == 8 * 6 * 6 * 9

    def test_conv1d(self) -> None:
        conv = nn.Conv1d(4, 6, 5)
        assert count_macs(conv, torch.rand(1, 4, 20)) == 6 * 16 * 4 * 5

    def test_fused_multihead_attention(self) -> None:
        mha = nn.MultiheadAttention(32, 4, batch_first=True)
        x = torch.rand(2, 10, 32)

        class Wrap(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mha = mha

            def forward(self, x: Tensor) -> Tensor:
                return self.mha(x, x, x, need_weights=False)[0]  # type: ignore[no-any-return]

        assert count_macs(Wrap(), x) == _mha_macs(2, 10, 32)

    def test_explicit_multihead_attention(self) -> None:
        assert count_macs(_MHAWithWeights(32, 4), torch.rand(2, 10, 32)) == _mha_macs(2, 10, 32)

    def test_scaled_dot_product_attention(self) -> None:
        q, k, v = torch.rand(2, 4, 10, 8), torch.rand(2, 4, 12, 8), torch.rand(2, 4, 12, 6)
        assert count_macs(_SDPA(), q, k, v) == 2 * 4 * 10 * 12 * (8 + 6)

    def test_scales_with_batch(self) -> None:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
        one = count_macs(model, torch.rand(1, 3, 8, 8))
        assert count_macs(model, torch.rand(5, 3, 8, 8)) == 5 * one

    def test_restores_training_mode(self) -> None:
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
        count_macs(model, torch.rand(2, 4))
        assert model.training

    def test_does_not_update_batchnorm_statistics(self) -> None:
        bn = nn.BatchNorm1d(4)
        model = nn.Sequential(nn.Linear(4, 4), bn).train()
        assert bn.running_mean is not None
        before = bn.running_mean.clone()
        count_macs(model, torch.rand(8, 4) + 3.0)
        assert torch.equal(bn.running_mean, before)

    def test_resnet18_cifar_is_0_56_gmacs(self) -> None:
        model = ResNet18Cifar()
        assert count_macs(model, *model.example_inputs(1)) == pytest.approx(0.556e9, rel=0.01)

    def test_clip_vit_b32_is_4_4_gmacs(self) -> None:
        model = ClipVisionBackbone(ClipVisionConfig())
        assert count_macs(model, *model.example_inputs(1)) == pytest.approx(4.41e9, rel=0.01)
