"""The teacher ensemble: a model of members, and `rkdsc models ensemble` joining checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from rkdsc_core.checkpoint import checkpoint_paths, load_model, save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.data import load_dataset
from rkdsc_core.distill.cache import build_teacher_cache, load_teacher_cache
from rkdsc_core.models import Backbone, EnsembleConfig, TeacherEnsemble, create_model
from rkdsc_core.train.teacher import evaluate_teacher
from tests.core.data.conftest import write_tree

# Three different members: max-pooled FastNet with a logit scale, mean-pooled ResNet,
# and CLIP, whose pool projects its wider tokens (token_dim 64 -> feature_dim 32).
MEMBERS: tuple[dict[str, Any], ...] = (
    {"model": "fastnet-cifar", "config": {"widths": [8, 16, 24]}},
    {"model": "resnet18-cifar", "config": {"width": 8}},
    {"model": "clip-vit-tiny", "config": {}},
)
DATASET = {"name": "cifar10", "sha256": "a" * 64}


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32)


def _member_log_probs(members: list[Backbone], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x).log_softmax(1) for m in members]).mean(0)


class TestTeacherEnsemble:
    def test_is_registered_with_the_readme_three_by_default(self) -> None:
        cfg = EnsembleConfig()
        assert [m["model"] for m in cfg.members] == [
            "fastnet-cifar",
            "fastnet-cifar",
            "efficientnet-lite0",
        ]
        assert cfg.members[1]["config"] == {"widths": [128, 384, 384]}

    def test_one_token_of_the_members_features_side_by_side(self) -> None:
        model = TeacherEnsemble(EnsembleConfig(members=MEMBERS)).eval()
        x = _images()
        tokens = model.forward_tokens(x)
        assert (model.num_tokens, model.feature_dim) == (1, 24 + 64 + 32)
        assert tokens.shape == (5, 1, model.feature_dim)
        parts = model.pool(tokens).split([24, 64, 32], dim=1)
        for member, part in zip(model.members, parts, strict=True):
            torch.testing.assert_close(part, member.pool(member.forward_tokens(x)))

    def test_logits_are_the_mean_member_log_softmax(self) -> None:
        model = TeacherEnsemble(EnsembleConfig(members=MEMBERS)).eval()
        x = _images()
        members = list(model.members)
        want = _member_log_probs(members, x)  # type: ignore[arg-type]
        torch.testing.assert_close(model(x), want)
        assert not torch.allclose(model(x), members[0](x).log_softmax(1))

    def test_forward_and_backward_reach_every_member(self) -> None:
        model = TeacherEnsemble(EnsembleConfig(members=MEMBERS[:2]))
        model(_images(4)).sum().backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)

    @pytest.mark.parametrize(
        ("members", "message"),
        [
            (MEMBERS[:1], "at least 2 members"),
            ((MEMBERS[0], {"model": "ensemble", "config": {}}), "itself an ensemble"),
            ((MEMBERS[0], {"config": {}}), r"members\[1\] must be"),
            ((MEMBERS[0], {"model": "fastnet-cifar", "config": [1]}), "must be a mapping"),
        ],
    )
    def test_bad_members_are_rejected(self, members: Any, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            EnsembleConfig(members=members)

    def test_members_must_agree_on_the_classes(self) -> None:
        other = {"model": "resnet18-cifar", "config": {"width": 8, "num_classes": 7}}
        with pytest.raises(ValueError, match=r"num_classes: \[7, 10\]"):
            TeacherEnsemble(EnsembleConfig(members=(MEMBERS[0], other)))

    def test_a_member_that_is_no_classifier_is_rejected(self) -> None:
        codec = {"model": "cat-codec", "config": {}}
        with pytest.raises(TypeError, match="not a Backbone"):
            TeacherEnsemble(EnsembleConfig(members=(MEMBERS[0], codec)))


def _save_members(tmp_path: Path, dataset: dict[str, Any] = DATASET) -> list[Path]:
    paths = []
    for i, m in enumerate(MEMBERS[:2]):
        model = create_model(m["model"], **m["config"])
        path = tmp_path / f"m{i}" / "teacher"
        save_checkpoint(
            path, model, name=m["model"], dataset=dataset, metrics={"test_accuracy": 0.5 + i}
        )
        paths.append(path)
    return paths


class TestEnsembleCommand:
    def test_joins_checkpoints_into_one_that_predicts_as_its_members(self, tmp_path: Path) -> None:
        paths = _save_members(tmp_path)
        out = tmp_path / "ens" / "teacher"
        cli = ["models", "ensemble", *map(str, paths), "--out", str(out), "--eval-images", "0"]
        result = CliRunner().invoke(app, [*cli, "--no-fp16"])
        assert result.exit_code == 0, result.output
        assert "2 members" in result.output
        model = load_model(out)
        assert isinstance(model, TeacherEnsemble)
        members = [load_model(p) for p in paths]
        x = _images()
        torch.testing.assert_close(model(x), _member_log_probs(members, x))  # type: ignore[arg-type]
        doc = json.loads(checkpoint_paths(out)[1].read_text())
        assert doc["model"] == "ensemble" and doc["dataset"] == DATASET
        recorded = [m["weights_sha256"] for m in doc["extra"]["members"]]
        wanted = [json.loads(checkpoint_paths(p)[1].read_text())["weights_sha256"] for p in paths]
        assert recorded == wanted
        assert [m["metrics"]["test_accuracy"] for m in doc["extra"]["members"]] == [0.5, 1.5]
        assert doc["metrics"] == {}  # --eval-images 0

    def test_scores_the_ensemble_on_the_members_test_split(self, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path  # 6 test images
        test = load_dataset("cifar10", "test", source=tree, cache_dir=tmp_path / "dc")
        paths = _save_members(tmp_path, {"name": "cifar10", "sha256": test.source_sha256})
        out = tmp_path / "ens" / "teacher"
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
        cli = ["models", "ensemble", *map(str, paths), "--out", str(out), *data]
        result = CliRunner().invoke(app, cli)  # float16 by default: scored as saved
        assert result.exit_code == 0, result.output
        metrics = json.loads(checkpoint_paths(out)[1].read_text())["metrics"]
        want = evaluate_teacher(load_model(out), test)
        assert metrics == {**want, "test_images": 6, "flip_tta": True}
        assert f"test accuracy {want['test_accuracy']:.4f}" in result.output

    @pytest.mark.parametrize("fp16", [True, False])
    def test_scores_exactly_the_weights_it_saves(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fp16: bool
    ) -> None:
        tree = write_tree(tmp_path / "tree").path
        test = load_dataset("cifar10", "test", source=tree, cache_dir=tmp_path / "dc")
        paths = _save_members(tmp_path, {"name": "cifar10", "sha256": test.source_sha256})
        scored: list[torch.nn.Module] = []

        def spy(model: torch.nn.Module, data: Any, **kw: Any) -> dict[str, float]:
            scored.append(model)
            return evaluate_teacher(model, data, **kw)

        monkeypatch.setattr("rkdsc_core.train.teacher.evaluate_teacher", spy)
        out = tmp_path / "ens" / "teacher"
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
        flag = "--fp16" if fp16 else "--no-fp16"
        cli = ["models", "ensemble", *map(str, paths), "--out", str(out), flag, *data]
        assert CliRunner().invoke(app, cli).exit_code == 0
        (model,) = scored
        saved = load_model(out).state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key]), key
        member = load_model(paths[0]).state_dict()["head.weight"]
        assert torch.equal(saved["members.0.head.weight"], member) is not fp16

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
    def test_scores_on_the_device_asked_for(self, tmp_path: Path) -> None:
        """--device reaches the scoring (here: refused clearly, as no GPU is present)."""
        tree = write_tree(tmp_path / "tree").path
        test = load_dataset("cifar10", "test", source=tree, cache_dir=tmp_path / "dc")
        paths = _save_members(tmp_path, {"name": "cifar10", "sha256": test.source_sha256})
        out = tmp_path / "ens" / "teacher"
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
        cli = ["models", "ensemble", *map(str, paths), "--out", str(out), *data]
        result = CliRunner().invoke(app, [*cli, "--device", "cuda"])
        assert result.exit_code == 2 and "sees no CUDA GPU" in result.output
        assert not out.exists()

    def test_scoring_on_another_copy_of_the_data_is_refused(self, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path
        paths = _save_members(tmp_path)  # trained on a copy with sha256 "aaa..."
        out = tmp_path / "ens"
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
        result = CliRunner().invoke(
            app, ["models", "ensemble", *map(str, paths), "--out", str(out), *data]
        )
        assert result.exit_code == 2
        assert "aaaaaaaaaaaa..." in result.output and "--eval-images 0" in result.output
        assert not out.exists()

    def test_the_teacher_cache_stores_its_log_probs_and_joined_features(
        self, tmp_path: Path, tiny_dataset: Any
    ) -> None:
        paths = _save_members(tmp_path, {"name": "cifar10", "sha256": "0" * 64})
        out = tmp_path / "ens" / "teacher"
        cli = ["models", "ensemble", *map(str, paths), "--out", str(out), "--eval-images", "0"]
        assert CliRunner().invoke(app, [*cli, "--no-fp16"]).exit_code == 0
        manifest = build_teacher_cache(out, tiny_dataset, tmp_path / "cache", views=1)
        cache = load_teacher_cache(manifest)
        model = load_model(out)
        x = torch.from_numpy(tiny_dataset.images[:4]).permute(0, 3, 1, 2).float() / 255
        assert cache.features.shape[-1] == 24 + 64
        torch.testing.assert_close(
            cache.logits[0, :4].float(), model(x), atol=2e-2, rtol=1e-2
        )  # stored as float16

    def test_members_of_different_datasets_are_refused(self, tmp_path: Path) -> None:
        a, _ = _save_members(tmp_path / "a")
        _, b = _save_members(tmp_path / "b", {"name": "cifar10", "sha256": "b" * 64})
        out = tmp_path / "ens"
        result = CliRunner().invoke(app, ["models", "ensemble", str(a), str(b), "--out", str(out)])
        assert result.exit_code == 2
        assert "different datasets" in result.output
        assert not out.exists()

    def test_one_member_or_a_missing_one_is_a_clear_error(self, tmp_path: Path) -> None:
        (a, _) = _save_members(tmp_path)
        out = str(tmp_path / "ens")
        one = CliRunner().invoke(app, ["models", "ensemble", str(a), "--out", out])
        assert one.exit_code == 2 and "at least 2 checkpoints" in one.output
        missing = CliRunner().invoke(
            app, ["models", "ensemble", str(a), str(tmp_path / "nope"), "--out", out]
        )
        assert missing.exit_code == 2 and "nope" in missing.output

    def test_a_member_that_does_not_fit_or_is_an_ensemble_is_a_clear_error(
        self, tmp_path: Path
    ) -> None:
        a, b = _save_members(tmp_path)
        nested = tmp_path / "ens" / "teacher"
        join = ["models", "ensemble", str(a), str(b), "--eval-images", "0", "--out"]
        assert CliRunner().invoke(app, [*join, str(nested)]).exit_code == 0
        again = CliRunner().invoke(app, [*join[:3], str(nested), *join[4:], str(tmp_path / "x")])
        assert again.exit_code == 2 and "itself an ensemble" in again.output
        manifest = checkpoint_paths(a)[1]  # a manifest whose config is not its weights'
        doc = json.loads(manifest.read_text())
        doc["config"]["widths"] = [8, 16, 32]
        manifest.write_text(json.dumps(doc))
        misfit = CliRunner().invoke(app, [*join, str(tmp_path / "y")])
        assert misfit.exit_code == 2 and "does not fit" in misfit.output
