"""Tests of the two robust-distillation stages on a tiny cached teacher."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from rkdsc_core.channel import Channel
from rkdsc_core.checkpoint import load_checkpoint, load_model, save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.data import ImageDataset
from rkdsc_core.distill import (
    FeatureProjector,
    TeacherCache,
    build_teacher_cache,
    load_teacher_cache,
)
from rkdsc_core.link import load_link
from rkdsc_core.models import create_model
from rkdsc_core.train import CodecRKDConfig, StudentKDConfig, train_codec, train_student
from rkdsc_core.train.ddp import DistInfo
from rkdsc_core.train.rkd import _stage1_projector
from tests.core.conftest import CLASSES
from tests.core.data.conftest import write_tree
from tests.deploy._support import ROOT, import_path

_STUDENT = StudentKDConfig(
    C=4,
    layers=3,
    student_overrides={"token_dim": 16},
    epochs=2,
    batch_size=8,
    eval_images=16,
)
_CODEC = CodecRKDConfig(
    codec_overrides={"d_model": 32, "heads": 2},
    num_pilots=4,
    epochs=1,
    batch_size=8,
    eval_images=16,
)


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rkd")


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    rng = np.random.default_rng(3)
    return ImageDataset(
        name="cifar10",
        split="train",
        classes=CLASSES,
        images=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        labels=np.arange(32, dtype=np.int64) % 10,
        source_sha256="1" * 64,
    )


@pytest.fixture(scope="module")
def cache(tmp_module: Path, data: ImageDataset) -> TeacherCache:
    torch.manual_seed(1)
    teacher = create_model("resnet18-cifar", width=4)
    save_checkpoint(tmp_module / "teacher", teacher, name="resnet18-cifar", command="test")
    build_teacher_cache(tmp_module / "teacher", data, tmp_module / "cache", views=2, batch_size=16)
    return load_teacher_cache(tmp_module / "cache", dataset=data)


@pytest.fixture(scope="module")
def student_ckpt(tmp_module: Path, cache: TeacherCache, data: ImageDataset) -> Path:
    cfg = dataclasses.replace(_STUDENT, epochs=1)
    train_student(cfg, cache, data, data, tmp_module / "stage1", max_steps=2)
    return tmp_module / "stage1" / "student"


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class TestStudentStage:
    def test_kd_and_feature_terms_are_in_history(
        self, student_ckpt: Path, tmp_module: Path
    ) -> None:
        _, doc = load_checkpoint(student_ckpt)
        history = doc["metrics"]["history"]
        assert len(history) == 1 and history[0]["steps"] == 2
        for key in ("loss", "task_loss", "kd_loss", "feat_loss"):
            assert math.isfinite(history[0][key]) and history[0][key] > 0, key
        assert 0.0 <= doc["metrics"]["test_accuracy"] <= 1.0
        assert doc["model"] == "darts-student" and doc["genotype"] is not None
        student = load_model(student_ckpt)
        assert student(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        state, _ = load_checkpoint(tmp_module / "stage1" / "state")
        assert any(k.startswith("model.projector.") for k in state)

    def test_shape_fields_are_not_overrides(self) -> None:
        with pytest.raises(ValueError, match="genotype as StudentKDConfig fields"):
            StudentKDConfig(student_overrides={"genotype": "darts_v1"})

    def test_resume_equals_uninterrupted(
        self, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        full, _ = train_student(_STUDENT, cache, data, data, tmp_path / "a")
        train_student(_STUDENT, cache, data, data, tmp_path / "b", max_steps=4)  # 1 epoch
        resumed, summary = train_student(_STUDENT, cache, data, data, tmp_path / "b")
        assert [h["epoch"] for h in summary["history"]] == [1, 2]
        for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        with pytest.raises(ValueError, match="another config"):
            train_student(
                dataclasses.replace(_STUDENT, w_kd=0.5), cache, data, data, tmp_path / "b"
            )

    def test_compiled_steps_match_eager_and_resume_eagerly(
        self, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        compiled = dataclasses.replace(DistInfo.single(), compile=True)
        eager, ref = train_student(_STUDENT, cache, data, data, tmp_path / "eager")
        counters.clear()
        train_student(_STUDENT, cache, data, data, tmp_path / "c", dist=compiled, max_steps=4)
        assert counters["stats"]["unique_graphs"] >= 1  # the forward did go through dynamo
        mixed, summary = train_student(_STUDENT, cache, data, data, tmp_path / "c")
        for a, b in zip(ref["history"], summary["history"], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert [h["compiled"] for h in summary["history"]] == [True, False]
        assert all(h["seconds"] > 0 for h in summary["history"])
        for (k, a), b in zip(eager.state_dict().items(), mixed.state_dict().values(), strict=True):
            if a.is_floating_point():  # compiled kernels round differently: close, not equal
                assert torch.allclose(a, b, atol=5e-3), k


class TestCodecStage:
    def test_runs_from_stage1_and_writes_a_loadable_link(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        _, summary = train_codec(
            _CODEC, student_ckpt, cache, data, data, tmp_path, max_steps=2, fp16=True
        )
        row = summary["history"][0]
        assert row["kd_loss"] > 0 and row["mse_loss"] > 0 and math.isfinite(row["loss"])
        bundle = load_link(tmp_path / "weights")
        assert bundle.classes == CLASSES
        assert bundle.meta["recipe"].startswith("RKD stage 2")
        out = bundle.pipeline(torch.rand(2, 3, 32, 32), Channel(), 10.0)
        assert out.logits.shape == (2, 10)

    def test_starts_from_the_stage1_projector(
        self,
        student_ckpt: Path,
        cache: TeacherCache,
        data: ImageDataset,
        tmp_path: Path,
        tmp_module: Path,
    ) -> None:
        saved, doc = load_checkpoint(student_ckpt.with_name("projector"))
        state, _ = load_checkpoint(tmp_module / "stage1" / "state")
        for k, v in saved.items():  # stage 1 wrote the projector it trained
            assert torch.equal(v, state[f"model.projector.{k}"]), k
        fresh = FeatureProjector(**doc["config"])
        assert _stage1_projector(student_ckpt, fresh, cache) == doc["weights_sha256"]
        assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in saved.items())
        _, summary = train_codec(_CODEC, student_ckpt, cache, data, data, tmp_path, max_steps=1)
        assert summary["projector"] == doc["weights_sha256"]  # recorded with the link
        # Another teacher's cache, or no projector beside the "student" (the teacher as the
        # student): a fresh projector.
        other = dataclasses.replace(cache, manifest={**cache.manifest, "weights_sha256": "f" * 64})
        assert _stage1_projector(student_ckpt, FeatureProjector(**doc["config"]), other) is None
        teacher = tmp_module / "teacher"
        assert _stage1_projector(teacher, FeatureProjector(**doc["config"]), cache) is None

    def test_a_run_keeps_its_start_when_a_projector_appears(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        # A stage-1 student without its projector beside it (as written before stage 1
        # wrote one): stage 2 starts fresh; rerunning stage 1 then writes the projector, and
        # the interrupted stage 2 must still resume, from its own state.
        lone = tmp_path / "s1"
        lone.mkdir()
        for suffix in (".safetensors", ".json"):
            shutil.copy(student_ckpt.with_suffix(suffix), lone / f"student{suffix}")
        cfg = dataclasses.replace(_CODEC, epochs=2)
        train_codec(cfg, lone / "student", cache, data, data, tmp_path / "c", max_steps=4)
        for suffix in (".safetensors", ".json"):
            shutil.copy(student_ckpt.with_name(f"projector{suffix}"), lone / f"projector{suffix}")
        _, summary = train_codec(cfg, lone / "student", cache, data, data, tmp_path / "c")
        assert [h["epoch"] for h in summary["history"]] == [1, 2]
        assert summary["projector"] is None

    def test_resumes_after_a_finished_stage_1_is_rerun(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        # make reproduce, run again: the finished stage 1 returns at once but re-saves its
        # student; the student's sha256 must not change, or stage 2 refuses to resume.
        stage1 = tmp_path / "s1"
        shutil.copytree(student_ckpt.parent, stage1)
        cfg = dataclasses.replace(_CODEC, epochs=2)
        train_codec(cfg, stage1 / "student", cache, data, data, tmp_path / "c", max_steps=4)
        sha = load_checkpoint(stage1 / "student")[1]["weights_sha256"]
        for _ in range(3):
            train_student(dataclasses.replace(_STUDENT, epochs=1), cache, data, data, stage1)
            assert load_checkpoint(stage1 / "student")[1]["weights_sha256"] == sha
        _, summary = train_codec(cfg, stage1 / "student", cache, data, data, tmp_path / "c")
        assert [h["epoch"] for h in summary["history"]] == [1, 2]

    def test_without_teacher_targets_no_teacher_term(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(_CODEC, teacher_targets=False)
        a, summary = train_codec(cfg, student_ckpt, cache, data, data, tmp_path / "a", max_steps=2)
        assert summary["history"][0]["kd_loss"] == 0 and summary["history"][0]["mse_loss"] == 0
        g = torch.Generator().manual_seed(9)  # other teacher outputs: the same training
        other = TeacherCache(
            logits=torch.randn(cache.logits.shape, generator=g).half(),
            features=torch.randn(cache.features.shape, generator=g).half(),
            labels=cache.labels,
            manifest=cache.manifest,
        )
        b, _ = train_codec(cfg, student_ckpt, other, data, data, tmp_path / "b", max_steps=2)
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), k

    def test_resume_with_dropout_equals_uninterrupted(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        # Dropout draws from the global RNG, which is reseeded per epoch and rank.
        cfg = dataclasses.replace(
            _CODEC, epochs=2, codec_overrides={**_CODEC.codec_overrides, "dropout": 0.3}
        )
        full, _ = train_codec(cfg, student_ckpt, cache, data, data, tmp_path / "a")
        train_codec(cfg, student_ckpt, cache, data, data, tmp_path / "b", max_steps=4)
        resumed, _ = train_codec(cfg, student_ckpt, cache, data, data, tmp_path / "b")
        for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b), k

    def test_student_moves_less_than_codec(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        torch.manual_seed(_CODEC.seed)  # replay train_codec's initialisation
        before_s = _params(load_model(student_ckpt))
        before_c = _params(
            create_model("cat-codec", token_dim=16, num_tokens=16, d_model=32, heads=2)
        )
        pipe, _ = train_codec(_CODEC, student_ckpt, cache, data, data, tmp_path, max_steps=3)

        def moved(before: dict[str, torch.Tensor], after: torch.nn.Module) -> float:
            deltas = [
                (v.float() - before[k].float()).abs().mean()
                for k, v in after.state_dict().items()
                if v.is_floating_point() and "running" not in k
            ]
            return float(torch.stack(deltas).mean())

        assert moved(before_s, pipe.student) < 0.5 * moved(before_c, pipe.codec)

    def test_a_zero_student_lr_scale_freezes_the_student_statistics_included(
        self, student_ckpt: Path, cache: TeacherCache, data: ImageDataset, tmp_path: Path
    ) -> None:
        before = load_model(student_ckpt).state_dict()
        assert any("running_mean" in k for k in before)  # it has statistics to keep
        cfg = dataclasses.replace(_CODEC, student_lr_scale=0.0)
        pipe, _ = train_codec(cfg, student_ckpt, cache, data, data, tmp_path, max_steps=3)
        after = pipe.student.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), "the student moved"


class TestCli:
    @pytest.mark.parametrize(
        ("teacher_name", "overrides"),
        [
            ("resnet18-cifar", {"width": 4}),
            ("fastnet-cifar", {"widths": (4, 8, 8)}),
            ("clip-vit-tiny", {}),  # tokens (64) wider than the projected feature (32)
        ],
    )
    def test_student_then_codec(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        teacher_name: str,
        overrides: dict[str, Any],
    ) -> None:
        for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR", "RKDSC_DEVICE"):
            monkeypatch.delenv(var, raising=False)
        for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(var, raising=False)
        import rkdsc_core.eval as eval_module

        measured: list[Any] = []  # the pipelines the eval tables are measured on
        real_measure = eval_module.measure_eval_table
        monkeypatch.setattr(
            eval_module,
            "measure_eval_table",
            lambda pipe, *a, **k: measured.append(pipe) or real_measure(pipe, *a, **k),
        )
        runner = CliRunner()
        tree = write_tree(tmp_path / "tree").path  # 9 train, 6 test images
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
        teacher = create_model(teacher_name, **overrides)
        save_checkpoint(
            tmp_path / "teacher", teacher, name=teacher_name, config=teacher.config, command="test"
        )
        args = ["train", "cache-teacher", "--teacher", str(tmp_path / "teacher")]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "tc"), "--views", "2", *data])
        assert result.exit_code == 0, result.output
        tc = ["--teacher-cache", str(tmp_path / "tc")]
        args = ["train", "student", *tc, "--out", str(tmp_path / "s"), "--genotype", "darts_v1"]
        tiny = ["--c", "4", "--layers", "3", "--token-dim", "16", "--eval-images", "6"]
        result = runner.invoke(app, [*args, *tiny, "--epochs", "1", "--batch-size", "4", *data])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(tmp_path / "s" / "student")[1]["config"]["C"] == 4
        args = ["train", "codec", "--student", str(tmp_path / "s" / "student"), *tc]
        args += ["--out", str(tmp_path / "c"), "--codec", '{"d_model": 32, "heads": 2}']
        opts = ["--epochs", "1", "--batch-size", "4", "--eval-images", "6", "--eval-limit", "4"]
        weights = ["--w-ce", "2", "--w-kd", "0.5", "--w-mse", "3", "--temperature", "2"]
        result = runner.invoke(app, [*args, *opts, *weights, "--no-teacher-targets", *data])
        assert result.exit_code == 0, result.output
        bundle = load_link(tmp_path / "c" / "weights")
        assert bundle.eval_table is not None and "without teacher" in bundle.meta["recipe"]
        # The table describes the shipped float16 weights, not the float32 model in memory.
        assert measured and all(torch.equal(p, p.half().float()) for p in measured[-1].parameters())
        # The link remembers its stage-1 student, and the model card shows it.
        source = bundle.meta["student_source"]
        assert source["extra"]["training"]["stage"].startswith("rkd-1")
        assert source["extra"]["training"]["wall_seconds"] > 0
        assert source["extra"]["teacher"]["path"] == str(tmp_path / "teacher")
        card = import_path(ROOT / "scripts" / "model_card.py").render(
            tmp_path / "c" / "weights", "a test machine"
        )
        assert "### The student before this stage" in card
        assert "| 1 |" in card.split("### The student before this stage")[1]
        assert "the same weights as the shipped teacher" not in card  # a test teacher
        config = bundle.meta["training"]["config"]
        assert (config["w_ce"], config["w_kd"], config["w_mse"]) == (2.0, 0.5, 3.0)
        assert config["temperature"] == 2.0
        # The teacher's own codec, trained the same way: the upper reference of the sweep.
        args = ["train", "codec", "--student", str(tmp_path / "teacher"), *tc]
        args += ["--out", str(tmp_path / "tcodec"), "--codec", '{"d_model": 32, "heads": 2}']
        result = runner.invoke(app, [*args, *opts, *data])
        assert result.exit_code == 0, result.output
        reference = load_link(tmp_path / "tcodec" / "weights")
        assert type(reference.pipeline.student).__name__ == type(teacher).__name__


class TestEnsembleTeacher:
    def test_both_stages_and_the_teachers_own_codec_run_from_an_ensemble(
        self, data: ImageDataset, tmp_path: Path
    ) -> None:
        # `rkdsc models ensemble` of two tiny teachers: one token of 64 + 24 features.
        members = (
            {"model": "resnet18-cifar", "config": {"width": 8}},
            {"model": "fastnet-cifar", "config": {"widths": [8, 16, 24]}},
        )
        teacher = create_model("ensemble", members=members)
        save_checkpoint(tmp_path / "teacher", teacher, name="ensemble", command="test")
        build_teacher_cache(tmp_path / "teacher", data, tmp_path / "cache", views=1)
        cache = load_teacher_cache(tmp_path / "cache", dataset=data)
        assert cache.features.shape == (1, 32, 88)
        cfg = dataclasses.replace(_STUDENT, epochs=1)
        train_student(cfg, cache, data, data, tmp_path / "stage1", max_steps=1)
        for student, out in (
            (tmp_path / "stage1" / "student", "rkd"),
            (tmp_path / "teacher", "tc"),
        ):
            _, summary = train_codec(
                _CODEC, student, cache, data, data, tmp_path / out, max_steps=1
            )
            row = summary["history"][0]
            assert row["mse_loss"] > 0 and math.isfinite(row["loss"]), out
            link = load_link(tmp_path / out / "weights")
            assert link.pipeline(torch.rand(2, 3, 32, 32), Channel(), 10.0).logits.shape == (2, 10)
