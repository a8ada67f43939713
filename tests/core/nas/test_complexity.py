"""Tests of the per-operation cost table and the expected complexity under softmax(alpha)."""

from __future__ import annotations

import pytest
import torch

from rkdsc_core.models.operations import PRIMITIVES
from rkdsc_core.nas import ExpectedCost, SearchNetwork, cost_table, op_cost

CHEAP = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")


class TestCostTable:
    @pytest.mark.parametrize("kind", ["params", "macs"])
    def test_cheap_ops_cost_less_than_sep_conv_5x5(self, kind: str) -> None:
        table = cost_table(16, 16, kind=kind)  # type: ignore[arg-type]
        assert table["sep_conv_5x5"] == 1.0
        for name in CHEAP:
            assert table[name] < table["sep_conv_5x5"], name
        assert table["sep_conv_3x3"] < table["sep_conv_5x5"]
        assert table["dil_conv_3x3"] < table["dil_conv_5x5"]

    def test_raw_counts_match_the_formulas(self) -> None:
        C = 16
        # SepConv 3x3 = two (depthwise 9C + pointwise C^2 + BN 2C) blocks.
        assert op_cost("sep_conv_3x3", C, 8) == 2 * (9 * C + C * C + 2 * C)
        assert op_cost("skip_connect", C, 8, stride=2) == C * C + 2 * C  # FactorizedReduce
        assert op_cost("dil_conv_3x3", C, 8, kind="macs") == 8 * 8 * (9 * C + C * C)

    def test_macs_scale_with_resolution(self) -> None:
        small = op_cost("sep_conv_3x3", 8, 8, kind="macs")
        assert op_cost("sep_conv_3x3", 8, 16, kind="macs") == 4 * small

    def test_unknown_kind_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="params, macs"):
            op_cost("sep_conv_3x3", 8, 8, kind="flops")  # type: ignore[arg-type]


class TestExpectedCost:
    def _cost(self) -> tuple[SearchNetwork, ExpectedCost]:
        net = SearchNetwork(4, 10, 3, input_size=16)
        return net, ExpectedCost.for_network(net, "params")

    def test_differentiable_in_alpha(self) -> None:
        net, cost = self._cost()
        cost(net.alphas_normal, net.alphas_reduce).backward()
        for alphas in (net.alphas_normal, net.alphas_reduce):
            assert alphas.grad is not None and alphas.grad.abs().sum() > 0

    def test_spans_zero_to_one(self) -> None:
        _, cost = self._cost()

        def one_hot(name: str) -> torch.Tensor:
            a = torch.zeros(14, len(PRIMITIVES))
            a[:, PRIMITIVES.index(name)] = 50.0
            return a

        assert float(cost(one_hot("none"), one_hot("none"))) == pytest.approx(0.0, abs=1e-6)
        top = float(cost(one_hot("sep_conv_5x5"), one_hot("sep_conv_5x5")))
        assert top == pytest.approx(1.0, abs=1e-5)

    def test_building_the_table_leaves_the_global_rng_alone(self) -> None:
        net = SearchNetwork(4, 10, 3, input_size=16)
        op_cost.cache_clear()
        state = torch.get_rng_state()
        ExpectedCost.for_network(net, "macs")
        assert torch.equal(torch.get_rng_state(), state)
