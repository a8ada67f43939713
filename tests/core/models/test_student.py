"""Tests of the DARTS student (``darts-student``)."""

from __future__ import annotations

import pytest
import torch

from rkdsc_core.models.genotypes import DARTS_V1, DARTS_V2, genotype_to_dict
from rkdsc_core.models.student import Cell, DartsStudent, StudentConfig
from rkdsc_core.registry import create_model, list_models


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def default_student() -> DartsStudent:
    torch.manual_seed(0)
    return DartsStudent()


def _small(**kw: object) -> DartsStudent:
    return DartsStudent(StudentConfig(C=4, layers=3, token_dim=16, **kw))  # type: ignore[arg-type]


class TestDartsStudent:
    def test_registered(self) -> None:
        assert "darts-student" in list_models()
        model = create_model("darts-student", C=4, layers=3, genotype="darts_v1")
        assert isinstance(model, DartsStudent)

    def test_token_and_logit_shapes(self, default_student: DartsStudent) -> None:
        images = torch.rand(2, 3, 32, 32)
        tokens = default_student.forward_tokens(images)
        assert tokens.shape == (2, default_student.num_tokens, default_student.feature_dim)
        assert (default_student.num_tokens, default_student.feature_dim) == (16, 128)
        assert tokens.dtype == torch.float32
        assert default_student(images).shape == (2, 10)

    def test_param_count_under_1m(self, default_student: DartsStudent) -> None:
        n = sum(p.numel() for p in default_student.parameters())
        print(f"darts-student default params: {n}")
        assert n < 1_000_000

    def test_example_inputs_run(self, default_student: DartsStudent) -> None:
        (images,) = default_student.example_inputs(2)
        assert images.shape == (2, 3, 32, 32)
        assert default_student(images).shape == (2, 10)

    def test_resizes_other_input_sizes(self) -> None:
        model = _small()
        assert model(torch.rand(2, 3, 40, 40)).shape == (2, 10)

    def test_all_params_get_grads(self) -> None:
        model = _small()
        model.train()
        model(torch.rand(2, 3, 32, 32)).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name

    def test_no_nan(self) -> None:
        model = _small().eval()
        with torch.no_grad():
            assert torch.isfinite(model(torch.rand(2, 3, 32, 32))).all()

    def test_drop_path_only_in_training(self) -> None:
        model = _small(drop_path_prob=0.5)
        images = torch.rand(4, 3, 32, 32)
        model.eval()
        with torch.no_grad():
            a, b = model.forward_tokens(images), model.forward_tokens(images)
        assert torch.equal(a, b)
        model.train()
        outs = [model.forward_tokens(images) for _ in range(2)]
        assert not torch.equal(outs[0], outs[1])

    def test_token_pool_1_gives_64_tokens(self) -> None:
        model = DartsStudent(StudentConfig(C=4, layers=3, token_dim=8, token_pool=1))
        assert model.num_tokens == 64
        assert model.forward_tokens(torch.rand(1, 3, 32, 32)).shape == (1, 64, 8)

    def test_config_stores_genotype_as_json_dict(self) -> None:
        cfg = StudentConfig(genotype=genotype_to_dict(DARTS_V1))
        assert cfg.genotype == genotype_to_dict(DARTS_V1)
        assert isinstance(cfg.to_dict()["genotype"]["normal"][0], list)

    @pytest.mark.parametrize(
        ("field", "value", "match"),
        [
            ("C", 5, "even"),
            ("layers", 1, "layers"),
            ("input_size", 30, "input_size"),
            ("drop_path_prob", 1.0, "drop_path_prob"),
            ("genotype", {"normal": []}, "keys"),
        ],
    )
    def test_invalid_config_raises(self, field: str, value: object, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            StudentConfig(**{field: value})  # type: ignore[arg-type]

    def test_bad_images_raise(self) -> None:
        with pytest.raises(TypeError, match="float"):
            _small()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


class TestCell:
    def test_reduction_halves_resolution(self) -> None:
        cell = Cell(DARTS_V2, 8, 8, 4, reduction=True, reduction_prev=False)
        out = cell(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8))
        assert out.shape == (2, 4 * 4, 4, 4)

    def test_reduction_prev_uses_factorized_reduce(self) -> None:
        cell = Cell(DARTS_V2, 8, 16, 4, reduction=False, reduction_prev=True)
        out = cell(torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4))
        assert out.shape == (2, 16, 4, 4)
