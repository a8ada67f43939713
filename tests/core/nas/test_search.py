"""Tests of the KDL-DARTS search loop: steps, complexity pressure, KD, checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.models.genotypes import genotype_from_dict
from rkdsc_core.nas import (
    ExpectedCost,
    SearchBatch,
    SearchConfig,
    SearchNetwork,
    StudentEvalConfig,
    TeacherOutputs,
    arch_step,
    build_search_modules,
    search,
    student_complexity,
    weight_step,
)
from tests.core.nas.conftest import TINY


def _batch(data: ImageDataset) -> SearchBatch:
    x, y = next(iter(BatchLoader(data, 8)))
    return SearchBatch(x, y, torch.arange(8))


def _teacher(data: ImageDataset, dim: int | None = 12) -> TeacherOutputs:
    g = torch.Generator().manual_seed(1)
    features = None if dim is None else torch.randn(len(data), dim, generator=g)
    return TeacherOutputs(torch.randn(len(data), 10, generator=g), features)


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


class TestSteps:
    def test_weight_step_moves_weights_not_alphas(self, search_data: ImageDataset) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True)
        modules = build_search_modules(cfg, 10, 12)
        opt = torch.optim.SGD(modules.weights(), lr=0.1)
        alphas, weights = _snapshot(modules.network.arch_parameters()), _snapshot(modules.weights())
        weight_step(modules, opt, _batch(search_data), _teacher(search_data), cfg)
        after = modules.network.arch_parameters()
        assert all(torch.equal(a, b) for a, b in zip(alphas, after, strict=True))
        assert all(p.grad is None for p in after)
        assert any(not torch.equal(a, b) for a, b in zip(weights, modules.weights(), strict=True))

    def test_arch_step_moves_alphas_not_weights(self, search_data: ImageDataset) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True, lam=0.5)
        modules = build_search_modules(cfg, 10, 12)
        net = modules.network
        opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
        cost = ExpectedCost.for_network(net, cfg.cost)
        alphas, weights = _snapshot(net.arch_parameters()), _snapshot(modules.weights())
        out = arch_step(modules, opt, cost, _batch(search_data), _teacher(search_data), cfg)
        assert all(torch.equal(a, b) for a, b in zip(weights, modules.weights(), strict=True))
        assert all(p.grad is None for p in modules.weights())
        # 3 cells: one normal, two reduction; every logit is in the graph and moves.
        assert all(
            not torch.equal(a, b) for a, b in zip(alphas, net.arch_parameters(), strict=True)
        )
        total = out["loss"].detach() + 0.5 * out["expected_cost"].detach()
        assert float(out["arch_loss"].detach()) == pytest.approx(float(total), rel=1e-6)


class TestComplexityPressure:
    def test_large_lambda_moves_the_search_to_cheaper_ops(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(TINY, epochs=3, arch_lr=0.05)  # 6 arch steps
        free = search(cfg, search_data, None, tmp_path / "free")
        costly = search(dataclasses.replace(cfg, lam=50.0), search_data, None, tmp_path / "l50")
        assert costly.history[-1]["expected_cost"] < free.history[-1]["expected_cost"]
        assert costly.history[-1]["expected_cost"] < costly.history[0]["expected_cost"]
        shape = StudentEvalConfig(C=8, layers=2, token_dim=16)
        p_free = student_complexity(free.genotype, shape)["params"]
        p_costly = student_complexity(costly.genotype, shape)["params"]
        assert p_costly < p_free


class TestSearch:
    def test_result_genotype_is_the_last_epochs(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        result = search(TINY, search_data, None, tmp_path)
        assert [h["epoch"] for h in result.history] == [1, 2]
        assert genotype_from_dict(result.history[-1]["genotype"]) == result.genotype
        names = {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"}
        assert set(result.alphas) == names

    def test_plain_darts_never_calls_the_teacher(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        class Refuse:
            feature_dim = 12

            def __call__(self, images: torch.Tensor, indices: torch.Tensor) -> None:
                raise AssertionError("plain DARTS must not query the teacher")

        result = search(TINY, search_data, Refuse(), tmp_path, max_steps=2)  # type: ignore[arg-type]
        entry = result.history[0]
        assert "train_ce" in entry and "train_kd" not in entry and "val_feature" not in entry

    def test_with_teacher_the_kd_terms_are_used(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True, lam=0.5)
        result = search(cfg, search_data, _teacher(search_data), tmp_path, max_steps=2)
        entry = result.history[0]
        for key in ("train_kd", "train_feature", "val_kd", "val_feature"):
            assert entry[key] > 0, key
        assert entry["train_loss"] == pytest.approx(
            entry["train_ce"] + entry["train_kd"] + entry["train_feature"], rel=1e-5
        )

    def test_teacher_queried_at_dataset_positions(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        seen: list[torch.Tensor] = []

        class Spy:
            feature_dim = None

            def __call__(
                self, images: torch.Tensor, indices: torch.Tensor
            ) -> tuple[torch.Tensor, None]:
                seen.append(indices)
                return torch.zeros(len(indices), 10), None

        cfg = dataclasses.replace(TINY, use_kd=True)
        search(cfg, search_data, Spy(), tmp_path, max_steps=2)
        idx = torch.cat(seen)
        assert len(idx) == 4 * 8 and len(set(idx.tolist())) == 32  # 2 weight + 2 arch batches
        assert int(idx.max()) < len(search_data)

    def test_resume_equals_uninterrupted(self, search_data: ImageDataset, tmp_path: Path) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True, lam=0.5)
        teacher = _teacher(search_data)
        full = search(cfg, search_data, teacher, tmp_path / "a")
        search(cfg, search_data, teacher, tmp_path / "b", max_steps=2)  # stops after epoch 1
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
            "arch-0001.json",
            "arch-0001.safetensors",
            "state.json",
            "state.safetensors",
        ]
        resumed = search(cfg, search_data, teacher, tmp_path / "b")
        assert [h["epoch"] for h in resumed.history] == [1, 2]
        for k, a in full.alphas.items():
            assert torch.equal(a, resumed.alphas[k]), k
        assert resumed.genotype == full.genotype
        assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]
        from rkdsc_core.checkpoint import load_checkpoint

        weights_a, _ = load_checkpoint(tmp_path / "a" / "state")
        weights_b, _ = load_checkpoint(tmp_path / "b" / "state")
        assert weights_a.keys() == weights_b.keys()
        for k, v in weights_a.items():
            assert torch.equal(v, weights_b[k]), k

    def test_resume_with_another_config_is_refused(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        search(TINY, search_data, None, tmp_path, max_steps=2)
        with pytest.raises(ValueError, match="another config"):
            search(dataclasses.replace(TINY, lam=1.0), search_data, None, tmp_path)

    def test_resume_on_other_data_or_another_teacher_is_refused(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True)
        n = len(search_data)

        def teacher(sha: str, config: dict[str, float] | None = None) -> TeacherOutputs:
            source: dict[str, object] = {"weights_sha256": sha}
            if config is not None:  # caches built since their manifests record it
                source["config"] = config
            return TeacherOutputs(torch.zeros(n, 10), torch.zeros(n, 8), source)

        search(cfg, search_data, teacher("a", {"logit_scale": 1.0}), tmp_path, max_steps=2)
        with pytest.raises(ValueError, match="another config"):  # same weights, other scale
            search(cfg, search_data, teacher("a", {"logit_scale": 9.0}), tmp_path)
        search(cfg, search_data, teacher("a", {"logit_scale": 1.0}), tmp_path, max_steps=2)
        tmp_path = tmp_path / "older-cache"
        search(cfg, search_data, teacher("a"), tmp_path, max_steps=2)
        with pytest.raises(ValueError, match="another config"):
            search(cfg, search_data, teacher("b"), tmp_path)
        other = dataclasses.replace(search_data, source_sha256="1" * 64)
        with pytest.raises(ValueError, match="another config"):
            search(cfg, other, teacher("a"), tmp_path)
        search(cfg, search_data, teacher("a"), tmp_path, max_steps=3)  # the same: resumes


class TestSearchErrors:
    def test_kd_without_teacher_is_refused(self, search_data: ImageDataset, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="use_kd=False"):
            search(dataclasses.replace(TINY, use_kd=True), search_data, None, tmp_path)

    def test_teacher_of_another_size_is_refused(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(TINY, use_kd=True)
        wrong = TeacherOutputs(torch.zeros(10, 10))
        with pytest.raises(ValueError, match="same split"):
            search(cfg, search_data, wrong, tmp_path)

    def test_split_smaller_than_a_batch_is_refused(
        self, search_data: ImageDataset, tmp_path: Path
    ) -> None:
        with pytest.raises(ValueError, match="lower batch_size or raise subset"):
            search(dataclasses.replace(TINY, subset=8), search_data, None, tmp_path)

    def test_bad_config_values_are_refused(self) -> None:
        with pytest.raises(ValueError, match="cost must be one of"):
            SearchConfig(cost="flops")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="partial_channels"):
            SearchConfig(C=6, partial_channels=4)
        # With 2 cells both are reduction cells: the normal cell's alphas would get no gradient.
        with pytest.raises(ValueError, match="layers must be >= 3"):
            SearchConfig(layers=2)
        with pytest.raises(ValueError, match="layers must be >= 3"):
            SearchNetwork(4, 10, 2)
