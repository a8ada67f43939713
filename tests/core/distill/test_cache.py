"""Tests of the pre-stored teacher cache: views, build, reload, verification."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rkdsc_core.checkpoint import save_checkpoint
from rkdsc_core.data import ImageDataset, to_tensor
from rkdsc_core.distill import (
    TeacherCacheError,
    augment_view,
    build_teacher_cache,
    load_teacher_cache,
    view_params,
)
from rkdsc_core.distill import cache as cache_module
from rkdsc_core.models import Backbone, create_model
from tests.core.conftest import CLASSES


def _teacher(path: Path, seed: int) -> tuple[Path, Backbone]:
    torch.manual_seed(seed)
    model = create_model("resnet18-cifar", width=4)
    assert isinstance(model, Backbone)
    save_checkpoint(path, model, name="resnet18-cifar", command="test")
    return path, model.eval()


def _interrupt_after_view_0(
    teacher: Path, dataset: ImageDataset, out: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 5
) -> None:
    """Build a 3-view cache of ``dataset`` that is stopped once view 0 is saved."""
    real = cache_module.write_tensors

    def write_then_stop(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cache_module, "write_tensors", write_then_stop)
        with pytest.raises(KeyboardInterrupt):
            build_teacher_cache(teacher, dataset, out, views=3, seed=seed)


def _record_views(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The views the teacher cache computes from now on, one entry per batch."""
    seen: list[int] = []
    real = cache_module.augment_view

    def recording(images: Any, indices: Any, view: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(int(view))
        return real(images, indices, view, *args, **kwargs)

    monkeypatch.setattr(cache_module, "augment_view", recording)
    return seen


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def teacher(tmp_module: Path) -> tuple[Path, Backbone]:
    return _teacher(tmp_module / "teacher", seed=1)


@pytest.fixture(scope="module")
def cache_path(tmp_module: Path, teacher: tuple[Path, Backbone]) -> Path:
    """One cache (3 views, seed 5) of ``tiny_dataset``, built once for the module."""
    rng = np.random.default_rng(0)  # the same images and labels as conftest's tiny_dataset
    dataset = ImageDataset(
        name="cifar10",
        split="test",
        classes=CLASSES,
        images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
        labels=np.repeat(np.arange(10), 4).astype(np.int64),
        source_sha256="0" * 64,
    )
    build_teacher_cache(teacher[0], dataset, tmp_module / "cache", views=3, seed=5, batch_size=16)
    return tmp_module / "cache"


class TestAugmentView:
    def test_view_zero_is_the_image(self, tiny_dataset: ImageDataset) -> None:
        idx = np.arange(8)
        out = augment_view(tiny_dataset.images[idx], idx, 0, seed=3)
        assert torch.equal(out, torch.from_numpy(tiny_dataset.images[idx]))

    def test_draw_depends_on_the_image_not_the_batch(self, tiny_dataset: ImageDataset) -> None:
        idx = np.array([5, 1, 7, 2])
        batch = augment_view(tiny_dataset.images[idx], idx, 2, seed=3)
        for b, i in enumerate(idx):
            alone = augment_view(tiny_dataset.images[[i]], [int(i)], 2, seed=3)
            assert torch.equal(batch[b : b + 1], alone)

    def test_same_seed_same_pixels_other_seed_or_view_others(
        self, tiny_dataset: ImageDataset
    ) -> None:
        idx = np.arange(40)
        a = augment_view(tiny_dataset.images, idx, 1, seed=3)
        assert torch.equal(a, augment_view(tiny_dataset.images, idx, 1, seed=3))
        assert not torch.equal(a, augment_view(tiny_dataset.images, idx, 1, seed=4))
        assert not torch.equal(a, augment_view(tiny_dataset.images, idx, 2, seed=3))

    def test_is_a_padded_crop_and_flip(self, tiny_dataset: ImageDataset) -> None:
        idx = np.arange(40)
        offsets, flips = view_params(idx, 1, seed=3)
        assert int(offsets.min()) >= 0 and int(offsets.max()) <= 8 and 0 < int(flips.sum()) < 40
        out = augment_view(tiny_dataset.images, idx, 1, seed=3)
        for i in (0, 17, 39):
            img = torch.from_numpy(tiny_dataset.images[i]).permute(2, 0, 1)
            r, c = (int(o) for o in offsets[i])
            want = F.pad(img, (4, 4, 4, 4))[:, r : r + 32, c : c + 32]
            want = want.flip(2) if flips[i] else want
            assert torch.equal(out[i], want.permute(1, 2, 0))


class TestTeacherCache:
    def test_reload_has_views_images_and_float16(
        self, cache_path: Path, tiny_dataset: ImageDataset, teacher: tuple[Path, Backbone]
    ) -> None:
        cache = load_teacher_cache(cache_path, dataset=tiny_dataset, teacher=teacher[0])
        assert cache.logits.shape == (3, 40, 10) and cache.features.shape == (3, 40, 32)
        assert cache.logits.dtype == cache.features.dtype == torch.float16
        assert cache.views == 3 and cache.seed == 5
        assert torch.equal(cache.labels, torch.from_numpy(tiny_dataset.labels))

    @pytest.mark.parametrize("view", [0, 2])
    def test_values_equal_recomputation(
        self,
        cache_path: Path,
        tiny_dataset: ImageDataset,
        teacher: tuple[Path, Backbone],
        view: int,
    ) -> None:
        cache = load_teacher_cache(cache_path)
        idx = np.array([3, 31, 0, 12, 25])
        batch = cache.batch(tiny_dataset, idx, view)
        with torch.no_grad():
            tokens = teacher[1].forward_tokens(batch.images)
            logits, features = teacher[1].forward_head(tokens), teacher[1].pool(tokens)
        torch.testing.assert_close(batch.logits, logits, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(batch.features, features, atol=2e-3, rtol=2e-3)
        assert torch.equal(batch.labels, torch.from_numpy(tiny_dataset.labels[idx]))
        pixels = to_tensor(augment_view(tiny_dataset.images[idx], idx, view, seed=5))
        assert torch.equal(batch.images, pixels)

    def test_per_image_views(self, cache_path: Path, tiny_dataset: ImageDataset) -> None:
        cache = load_teacher_cache(cache_path)
        idx, views = np.array([4, 4, 9]), torch.tensor([0, 1, 2])
        logits, _ = cache.targets(idx, views)
        for b in range(3):
            assert torch.equal(logits[b], cache.logits[int(views[b]), int(idx[b])].float())

    def test_rebuild_is_reproducible(
        self,
        cache_path: Path,
        tmp_path: Path,
        tiny_dataset: ImageDataset,
        teacher: tuple[Path, Backbone],
    ) -> None:
        build_teacher_cache(teacher[0], tiny_dataset, tmp_path / "again", views=3, seed=5)
        a, b = load_teacher_cache(cache_path), load_teacher_cache(tmp_path / "again")
        assert torch.equal(a.logits, b.logits) and torch.equal(a.features, b.features)

    def test_shows_its_progress_in_images(
        self,
        tmp_path: Path,
        tiny_dataset: ImageDataset,
        teacher: tuple[Path, Backbone],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        build_teacher_cache(teacher[0], tiny_dataset, tmp_path / "c", views=2, batch_size=16)
        err = capsys.readouterr().err
        assert "teacher cache" in err and f"/{2 * len(tiny_dataset)} [" in err  # views x images

    def test_an_interrupted_build_resumes_at_the_first_missing_view(
        self,
        cache_path: Path,
        tmp_path: Path,
        tiny_dataset: ImageDataset,
        teacher: tuple[Path, Backbone],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        _interrupt_after_view_0(teacher[0], tiny_dataset, tmp_path / "c", monkeypatch)
        assert (tmp_path / "c.partial" / "view-0.safetensors").is_file()
        views = _record_views(monkeypatch)
        build_teacher_cache(teacher[0], tiny_dataset, tmp_path / "c", views=3, seed=5)
        assert sorted(set(views)) == [1, 2]  # view 0 was read back, not recomputed
        a, b = load_teacher_cache(cache_path), load_teacher_cache(tmp_path / "c")
        assert torch.equal(a.logits, b.logits) and torch.equal(a.features, b.features)
        assert not (tmp_path / "c.partial").exists()

    @pytest.mark.parametrize("spoil", ["another teacher", "another seed", "truncated"])
    def test_a_partial_view_that_does_not_fit_is_recomputed(
        self,
        spoil: str,
        cache_path: Path,
        tmp_path: Path,
        tiny_dataset: ImageDataset,
        teacher: tuple[Path, Backbone],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        first = (
            _teacher(tmp_path / "other", seed=2)[0] if spoil == "another teacher" else teacher[0]
        )
        seed = 6 if spoil == "another seed" else 5  # view 0 is the image whatever the seed
        _interrupt_after_view_0(first, tiny_dataset, tmp_path / "c", monkeypatch, seed=seed)
        view_0 = tmp_path / "c.partial" / "view-0.safetensors"
        if spoil == "truncated":
            view_0.write_bytes(view_0.read_bytes()[:100])
        views = _record_views(monkeypatch)
        build_teacher_cache(teacher[0], tiny_dataset, tmp_path / "c", views=3, seed=5)
        assert sorted(set(views)) == [0, 1, 2] and "redoing it" in caplog.text
        a, b = load_teacher_cache(cache_path), load_teacher_cache(tmp_path / "c")
        assert torch.equal(a.logits, b.logits) and torch.equal(a.features, b.features)

    def test_another_dataset_is_refused(self, cache_path: Path, tiny_dataset: ImageDataset) -> None:
        with pytest.raises(TeacherCacheError, match="another dataset"):
            load_teacher_cache(cache_path, dataset=tiny_dataset.sample(40, seed=1))

    def test_another_teacher_is_refused(self, cache_path: Path, tmp_path: Path) -> None:
        other, _ = _teacher(tmp_path / "other", seed=2)
        with pytest.raises(TeacherCacheError, match="another teacher"):
            load_teacher_cache(cache_path, teacher=other)

    def test_the_same_weights_under_another_config_are_refused(
        self, cache_path: Path, teacher: tuple[Path, Backbone], tmp_path: Path
    ) -> None:
        other = {"width": 4, "num_classes": 10, "logit_scale": 9.0}  # same weights, other use
        save_checkpoint(tmp_path / "same", teacher[1], name="resnet18-cifar", config=other)
        with pytest.raises(TeacherCacheError, match="same weights under another config"):
            load_teacher_cache(cache_path, teacher=tmp_path / "same")
        load_teacher_cache(cache_path, teacher=teacher[0])  # its own teacher still fits

    def test_corrupt_file_is_refused(self, cache_path: Path, tmp_path: Path) -> None:
        for suffix in (".json", ".safetensors"):
            shutil.copy(cache_path.with_name("cache" + suffix), tmp_path / ("cache" + suffix))
        weights = tmp_path / "cache.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        with pytest.raises(TeacherCacheError, match="corrupt"):
            load_teacher_cache(tmp_path / "cache")

    def test_view_out_of_range_is_refused(self, cache_path: Path) -> None:
        with pytest.raises(ValueError, match="out of range"):
            load_teacher_cache(cache_path).targets([0], 3)
