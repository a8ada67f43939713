"""Tests of the DARTS op table and genotypes."""

from __future__ import annotations

import json

import pytest
import torch

from rkdsc_core.models.genotypes import (
    DARTS_V2,
    DEFAULT_GENOTYPE,
    GENOTYPES,
    Genotype,
    genotype_from_dict,
    genotype_to_dict,
    get_genotype,
)
from rkdsc_core.models.operations import (
    OPS,
    PRIMITIVES,
    FactorizedReduce,
    Identity,
    Zero,
    drop_path,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TestOps:
    def test_table_matches_primitives(self) -> None:
        assert len(PRIMITIVES) == 8
        assert set(OPS) == set(PRIMITIVES)

    @pytest.mark.parametrize("name", PRIMITIVES)
    @pytest.mark.parametrize("stride", [1, 2])
    def test_output_shape(self, name: str, stride: int) -> None:
        op = OPS[name](8, stride, True)
        out = op(torch.randn(2, 8, 7, 7))
        expected = (2, 8, 4, 4) if stride == 2 else (2, 8, 7, 7)
        assert out.shape == expected

    @pytest.mark.parametrize("name", PRIMITIVES)
    @pytest.mark.parametrize("stride", [1, 2])
    def test_backward_gives_grads(self, name: str, stride: int) -> None:
        op = OPS[name](8, stride, False)
        x = torch.randn(2, 8, 8, 8, requires_grad=True)
        op(x).sum().backward()
        assert x.grad is not None
        for p in op.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()

    @pytest.mark.parametrize("affine", [True, False])
    def test_affine_flag_controls_bn_params(self, affine: bool) -> None:
        op = OPS["sep_conv_3x3"](8, 1, affine)
        bns = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(bn.affine is affine for bn in bns)

    def test_skip_connect_stride_1_is_identity(self) -> None:
        assert isinstance(OPS["skip_connect"](8, 1, True), Identity)
        assert isinstance(OPS["skip_connect"](8, 2, True), FactorizedReduce)

    def test_none_is_zero(self) -> None:
        out = Zero(2)(torch.randn(1, 3, 5, 5))
        assert out.shape == (1, 3, 3, 3) and not out.any()

    def test_bad_stride_raises(self) -> None:
        with pytest.raises(ValueError, match="stride"):
            OPS["sep_conv_3x3"](8, 3, True)

    def test_factorized_reduce_odd_channels_raises(self) -> None:
        with pytest.raises(ValueError, match="even"):
            FactorizedReduce(4, 5)


class TestDropPath:
    def test_zero_prob_is_identity(self) -> None:
        x = torch.randn(4, 3, 2, 2)
        assert drop_path(x, 0.0) is x

    def test_drops_whole_samples_and_rescales(self) -> None:
        x = torch.ones(1000, 2, 2, 2)
        g = torch.Generator().manual_seed(1)
        out = drop_path(x, 0.25, generator=g)
        per_sample = out.flatten(1)
        kept = per_sample[:, 0] != 0
        assert torch.allclose(per_sample[kept], torch.tensor(1.0 / 0.75))
        assert (per_sample == per_sample[:, :1]).all()
        assert abs(out.mean().item() - 1.0) < 0.1

    def test_bad_prob_raises(self) -> None:
        with pytest.raises(ValueError, match="drop_prob"):
            drop_path(torch.ones(2, 2), 1.0)


class TestGenotype:
    def test_json_round_trip(self) -> None:
        text = json.dumps(genotype_to_dict(DARTS_V2))
        assert genotype_from_dict(json.loads(text)) == DARTS_V2

    def test_default_and_named(self) -> None:
        assert DEFAULT_GENOTYPE == DARTS_V2
        assert get_genotype("DARTS_V2") == GENOTYPES["darts_v2"] == DARTS_V2

    def test_unknown_name_raises(self) -> None:
        with pytest.raises(ValueError, match="known genotypes"):
            get_genotype("nasnet")

    def test_unknown_op_raises(self) -> None:
        d = genotype_to_dict(DARTS_V2)
        d["normal"][0][0] = "conv_7x7"
        with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
            genotype_from_dict(d)

    def test_future_node_index_raises(self) -> None:
        d = genotype_to_dict(DARTS_V2)
        d["reduce"][2][1] = 3  # node 1 may read states 0..2 only
        with pytest.raises(ValueError, match="node 1"):
            genotype_from_dict(d)

    def test_odd_edge_count_raises(self) -> None:
        d = genotype_to_dict(DARTS_V2)
        d["normal"] = d["normal"][:-1]
        with pytest.raises(ValueError, match="even number of edges"):
            genotype_from_dict(d)

    def test_bad_concat_raises(self) -> None:
        d = genotype_to_dict(DARTS_V2)
        d["normal_concat"] = [2, 3, 6]
        with pytest.raises(ValueError, match="normal_concat"):
            genotype_from_dict(d)

    def test_missing_key_raises(self) -> None:
        d = genotype_to_dict(DARTS_V2)
        del d["reduce_concat"]
        with pytest.raises(ValueError, match="missing \\['reduce_concat'\\]"):
            genotype_from_dict(d)

    def test_is_namedtuple_of_tuples(self) -> None:
        g = genotype_from_dict(genotype_to_dict(DARTS_V2))
        assert isinstance(g, Genotype) and isinstance(g.normal[0], tuple)
