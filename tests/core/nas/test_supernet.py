"""Tests of the PC-DARTS supernet: mixed ops, search cells, the network and its genotype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rkdsc_core.models.genotypes import validate_genotype
from rkdsc_core.models.operations import PRIMITIVES
from rkdsc_core.nas import MixedOp, SearchNetwork, derive_cell, edge_softmax, num_edges
from rkdsc_core.registry import create_model


def _net(**kw: object) -> SearchNetwork:
    return SearchNetwork(4, 10, 3, input_size=16, **kw)  # type: ignore[arg-type]


def _weights() -> torch.Tensor:
    return torch.softmax(torch.randn(len(PRIMITIVES)), dim=0)


class TestMixedOp:
    @pytest.mark.parametrize("partial_channels", [1, 4])
    @pytest.mark.parametrize(("stride", "size"), [(1, 8), (2, 4)])
    def test_output_shape(self, partial_channels: int, stride: int, size: int) -> None:
        op = MixedOp(8, stride, partial_channels=partial_channels)
        out = op(torch.randn(2, 8, 8, 8), _weights())
        assert out.shape == (2, 8, size, size)

    def test_partial_channels_shrink_the_ops(self) -> None:
        full = sum(p.numel() for p in MixedOp(8, 1, partial_channels=1).parameters())
        part = sum(p.numel() for p in MixedOp(8, 1, partial_channels=4).parameters())
        assert part < full / 4

    def test_pools_followed_by_affine_free_batchnorm(self) -> None:
        op = MixedOp(8, 1, partial_channels=4)
        for name, module in zip(PRIMITIVES, op.ops, strict=True):
            if "pool" in name:
                assert isinstance(module, nn.Sequential)
                bn = module[-1]
                assert isinstance(bn, nn.BatchNorm2d) and not bn.affine

    def test_indivisible_channels_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="partial_channels"):
            MixedOp(6, 1, partial_channels=4)


class TestArchitectureWeights:
    def test_op_weights_sum_to_one(self) -> None:
        net = _net()
        for kind in ("normal", "reduce"):
            w = net.op_weights(kind)  # type: ignore[arg-type]
            assert w.shape == (num_edges(), len(PRIMITIVES))
            torch.testing.assert_close(w.sum(dim=1), torch.ones(num_edges()))

    def test_edge_weights_sum_to_one_per_node(self) -> None:
        w = edge_softmax(torch.randn(num_edges()))
        sums = [float(w[s : s + n].sum()) for s, n in ((0, 2), (2, 3), (5, 4), (9, 5))]
        assert sums == pytest.approx([1.0] * 4)

    def test_arch_parameters_are_not_weights(self) -> None:
        net = _net()
        arch = {id(p) for p in net.arch_parameters()}
        weights = {id(p) for p in net.weights()}
        assert len(arch) == 4 and not arch & weights
        assert arch | weights == {id(p) for p in net.parameters()}

    def test_same_generator_seed_same_alphas(self) -> None:
        a = _net(generator=torch.Generator().manual_seed(3))
        b = _net(generator=torch.Generator().manual_seed(3))
        for x, y in zip(a.arch_parameters(), b.arch_parameters(), strict=True):
            assert torch.equal(x, y)


class TestSearchNetwork:
    def test_forward_backward_reaches_every_parameter(self) -> None:
        net = SearchNetwork(4, 10, 3, input_size=16)  # 3 cells: one normal, two reduction
        logits = net(torch.rand(2, 3, 32, 32))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
        logits.square().sum().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name

    def test_cell_specs_follow_the_student_layout(self) -> None:
        net = SearchNetwork(4, 10, 5, input_size=16)
        kinds = [s.kind for s in net.cell_specs]
        assert kinds == ["normal", "reduce", "normal", "reduce", "normal"]
        assert [s.resolution for s in net.cell_specs] == [16, 16, 8, 8, 4]
        assert [s.C for s in net.cell_specs] == [4, 8, 8, 16, 16]


class TestGenotype:
    def test_derived_genotype_builds_a_student_that_runs(self) -> None:
        genotype = _net().genotype()
        assert validate_genotype(genotype) == genotype
        student = create_model("darts-student", genotype=genotype, C=4, layers=2, token_dim=8)
        assert student(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    def test_derive_skips_none_and_keeps_two_strongest_edges(self) -> None:
        ops = torch.full((num_edges(), len(PRIMITIVES)), 0.01)
        ops[:, PRIMITIVES.index("none")] = 0.9  # "none" always largest: must never be chosen
        ops[0, PRIMITIVES.index("sep_conv_3x3")] = 0.5
        ops[1, PRIMITIVES.index("max_pool_3x3")] = 0.3
        edges = torch.ones(num_edges())
        edges[9 + 4] = 5.0  # node 3: its edge from node 2 (state 4) dominates
        gene = derive_cell(ops, edges)
        assert len(gene) == 8 and all(op != "none" for op, _ in gene)
        assert gene[:2] == (("sep_conv_3x3", 0), ("max_pool_3x3", 1))
        assert gene[6][1] == 4
