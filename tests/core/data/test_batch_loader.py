"""Tests of BatchLoader: batches, seeding per epoch, and sharding across ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rkdsc_core.data import BatchLoader, ImageDataset, epoch_generator


def _dataset(n: int = 10, channels: int = 3) -> ImageDataset:
    """Image i is filled with the value i, so batches reveal their indices."""
    images = np.broadcast_to(
        np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 8, 8, channels)
    ).copy()
    labels = np.arange(n, dtype=np.int64) % 10
    return ImageDataset("cifar10", "train", tuple("abcdefghij"), images, labels, "0" * 64)


def _seen(loader: BatchLoader) -> list[int]:
    return [round(v * 255) for x, _ in loader for v in x[:, 0, 4, 4].tolist()]


class TestBatchLoader:
    def test_batch_shapes_and_dtypes(self) -> None:
        x, y = next(iter(BatchLoader(_dataset(), 4)))
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
        assert y.shape == (4,) and y.dtype == torch.int64

    def test_grayscale_batches_have_three_channels(self) -> None:
        x, _ = next(iter(BatchLoader(_dataset(channels=1), 4)))
        assert x.shape == (4, 3, 8, 8)

    def test_labels_match_images(self) -> None:
        ds = _dataset()
        for x, y in BatchLoader(ds, 3, shuffle=True, seed=1):
            index = (x[:, 0, 0, 0] * 255).round().long()
            assert torch.equal(y, torch.from_numpy(ds.labels)[index])

    def test_unshuffled_order_is_dataset_order(self) -> None:
        assert _seen(BatchLoader(_dataset(), 4)) == list(range(10))

    def test_shuffled_epoch_covers_every_index_once(self) -> None:
        seen = _seen(BatchLoader(_dataset(), 3, shuffle=True, seed=0))
        assert sorted(seen) == list(range(10)) and seen != list(range(10))

    def test_same_seed_and_epoch_same_order(self) -> None:
        a = BatchLoader(_dataset(), 4, shuffle=True, seed=3)
        b = BatchLoader(_dataset(), 4, shuffle=True, seed=3)
        assert _seen(a) == _seen(b) == _seen(a)

    def test_set_epoch_changes_order(self) -> None:
        loader = BatchLoader(_dataset(n=50), 8, shuffle=True, seed=3)
        first = _seen(loader)
        loader.set_epoch(1)
        assert _seen(loader) != first
        loader.set_epoch(0)
        assert _seen(loader) == first

    def test_drop_last_drops_the_short_batch(self) -> None:
        loader = BatchLoader(_dataset(), 4, drop_last=True)
        assert [len(y) for _, y in loader] == [4, 4]
        assert len(loader) == 2

    @pytest.mark.parametrize("world_size", [1, 2, 3, 4])
    def test_shards_cover_all_indices_exactly_once(self, world_size: int) -> None:
        ds = _dataset(n=11)
        seen: list[int] = []
        for rank in range(world_size):
            loader = BatchLoader(ds, 2, shuffle=True, seed=5, rank=rank, world_size=world_size)
            seen += _seen(loader)
        assert sorted(seen) == list(range(11))

    def test_drop_last_gives_every_rank_the_same_steps(self) -> None:
        loaders = [
            BatchLoader(_dataset(n=11), 2, drop_last=True, rank=r, world_size=3) for r in range(3)
        ]
        steps = [sum(1 for _ in loader) for loader in loaders]
        assert steps == [len(loader) for loader in loaders] == [1, 1, 1]

    @pytest.mark.parametrize(("n", "world_size", "batch"), [(10, 1, 4), (11, 3, 2), (7, 2, 5)])
    def test_len_matches_iteration(self, n: int, world_size: int, batch: int) -> None:
        for rank in range(world_size):
            loader = BatchLoader(_dataset(n), batch, rank=rank, world_size=world_size)
            assert len(loader) == sum(1 for _ in loader)

    def test_augmentation_is_seeded(self) -> None:
        ds = _dataset(n=20)
        ds = ImageDataset(
            ds.name, ds.split, ds.classes,
            np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8),
            ds.labels, ds.source_sha256,
        )  # fmt: skip
        runs = [
            [x for x, _ in BatchLoader(ds, 8, shuffle=True, augment=True, seed=9)] for _ in range(2)
        ]
        assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
        plain = [x for x, _ in BatchLoader(ds, 8, shuffle=True, seed=9)]
        assert not all(torch.equal(a, b) for a, b in zip(runs[0], plain, strict=True))

    @pytest.mark.parametrize("padding", [0, 2])
    def test_crop_padding_bounds_the_shift(self, padding: int) -> None:
        rng = np.random.default_rng(1)
        images = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
        ds = ImageDataset(
            "cifar10", "train", tuple("abcdefghij"), images, np.zeros(16, np.int64), "0" * 64
        )
        loader = BatchLoader(ds, 16, augment=True, crop_padding=padding, seed=3)
        ((x, _),) = list(loader)
        src = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        for out, img in zip(x, src, strict=True):
            padded = torch.nn.functional.pad(img, (padding,) * 4)
            views = [
                v[:, dy : dy + 8, dx : dx + 8]
                for v in (padded, padded.flip(2))
                for dy in range(2 * padding + 1)
                for dx in range(2 * padding + 1)
            ]
            assert any(torch.equal(out, v) for v in views)
        if padding == 0:  # flips only: no zero border ever appears
            assert (x > 0).all()

    def test_cutout_after_the_crops_keeps_the_crop_stream(self) -> None:
        rng = np.random.default_rng(2)
        images = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
        ds = ImageDataset(
            "cifar10", "train", tuple("abcdefghij"), images, np.zeros(16, np.int64), "0" * 64
        )
        ((plain, _),) = list(BatchLoader(ds, 16, augment=True, seed=3))
        ((cut, _),) = list(BatchLoader(ds, 16, augment=True, cutout_size=4, seed=3))
        grey = (cut == 128 / 255).all(dim=1)  # [B, H, W]: the cut-out pixels
        assert grey.any(dim=(1, 2)).all()  # one square per image
        keep = ~grey[:, None].expand_as(cut)
        assert torch.equal(cut[keep], plain[keep])  # the same crops and flips elsewhere
        for bad in (-1, 9):  # 8x8 images
            with pytest.raises(ValueError, match=r"cutout_size must be in \[0, 8\]"):
                BatchLoader(ds, 4, augment=True, cutout_size=bad)
        with pytest.raises(ValueError, match="augment=True"):
            BatchLoader(ds, 4, cutout_size=4)

    def test_negative_crop_padding_raises(self) -> None:
        with pytest.raises(ValueError, match="crop_padding"):
            BatchLoader(_dataset(), 4, augment=True, crop_padding=-1)

    def test_reflect_padding_leaves_no_black_border(self) -> None:
        rng = np.random.default_rng(1)
        images = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
        ds = ImageDataset(
            "cifar10", "train", tuple("abcdefghij"), images, np.zeros(16, np.int64), "0" * 64
        )
        ((zeros, _),) = list(BatchLoader(ds, 16, augment=True, crop_padding=3, seed=3))
        loader = BatchLoader(ds, 16, augment=True, crop_padding=3, pad_mode="reflect", seed=3)
        ((x, _),) = list(loader)
        assert (zeros == 0).any() and (x > 0).all()
        with pytest.raises(ValueError, match="pad_mode must be one of"):
            BatchLoader(ds, 4, augment=True, pad_mode="edge")
        with pytest.raises(ValueError, match=r"reflect padding must be < the image side \(8"):
            BatchLoader(ds, 4, augment=True, crop_padding=8, pad_mode="reflect")

    def test_does_not_touch_the_global_rng(self) -> None:
        state = torch.get_rng_state()
        for _ in BatchLoader(_dataset(), 4, shuffle=True, augment=True):
            pass
        assert torch.equal(torch.get_rng_state(), state)

    def test_invalid_rank_raises(self) -> None:
        with pytest.raises(ValueError, match="rank"):
            BatchLoader(_dataset(), 4, rank=2, world_size=2)

    def test_epoch_generators_differ_by_epoch_and_stream(self) -> None:
        draws = {
            key: torch.randint(0, 2**30, (4,), generator=epoch_generator(*key)).tolist()
            for key in [(0, 0), (0, 1), (1, 0), (0, 0, 1)]
        }
        assert len({tuple(v) for v in draws.values()}) == 4

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_batches_match_cpu_batches(self) -> None:
        ds = _dataset(n=20)
        cpu = list(BatchLoader(ds, 8, shuffle=True, augment=True, seed=2))
        gpu = list(BatchLoader(ds, 8, shuffle=True, augment=True, seed=2, device="cuda"))
        for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
            assert xg.device.type == "cuda" and yg.device.type == "cuda"
            assert torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
