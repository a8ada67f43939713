"""Tests of to_tensor and the batched augmentations: random crop/flip and cutout."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rkdsc_core.data import cutout, random_crop_flip, to_tensor


def _images(b: int = 16, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    """Distinct positive values everywhere, so every crop/flip is identifiable."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).reshape(b, c, h, w)


def _candidates(image: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    _, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out.append((dy, dx, False, crop))
            out.append((dy, dx, True, crop.flip(-1)))
    return out


class TestToTensor:
    def test_rgb_to_nchw_float_in_unit_range(self) -> None:
        x = np.zeros((2, 4, 5, 3), np.uint8)
        x[0, 1, 2] = (255, 0, 51)
        t = to_tensor(x)
        assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32
        assert t[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0

    def test_grayscale_is_replicated_to_three_channels(self) -> None:
        x = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 1), dtype=np.uint8)
        t = to_tensor(x)
        assert t.shape == (3, 3, 6, 6)
        assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])

    def test_accepts_uint8_tensor(self) -> None:
        x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
        assert torch.equal(to_tensor(x), torch.ones(1, 3, 2, 2))

    def test_read_only_array_gives_no_warning(self) -> None:
        x = np.zeros((1, 2, 2, 3), np.uint8)
        x.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            to_tensor(x)

    def test_rejects_float_input(self) -> None:
        with pytest.raises(TypeError, match="uint8"):
            to_tensor(np.zeros((1, 2, 2, 3), np.float32))

    def test_rejects_channels_first_input(self) -> None:
        with pytest.raises(ValueError, match=r"\[B, H, W, 1 or 3\]"):
            to_tensor(np.zeros((1, 3, 8, 8), np.uint8))


class TestRandomCropFlip:
    def test_output_shape_dtype_device(self) -> None:
        x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
        out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device

    def test_same_seed_same_output(self) -> None:
        x = _images()
        a = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
        b = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)

    def test_different_seed_different_output(self) -> None:
        x = _images()
        a = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
        b = random_crop_flip(x, generator=torch.Generator().manual_seed(2))
        assert not torch.equal(a, b)

    def test_each_output_is_a_zero_padded_crop_or_its_mirror(self) -> None:
        x = _images(b=32)
        out = random_crop_flip(x, generator=torch.Generator().manual_seed(3), padding=2)
        seen_flip, seen_shift = False, False
        for image, result in zip(x, out, strict=True):
            matches = [
                (dy, dx, flipped)
                for dy, dx, flipped, crop in _candidates(image, 2)
                if torch.equal(crop, result)
            ]
            assert len(matches) == 1
            dy, dx, flipped = matches[0]
            seen_flip |= flipped
            seen_shift |= (dy, dx) != (2, 2)
        assert seen_flip and seen_shift

    def test_flip_rate_is_about_half(self) -> None:
        x = _images(b=2000, c=1, h=1, w=4)
        out = random_crop_flip(x, generator=torch.Generator().manual_seed(4), padding=0)
        rate = (out[:, 0, 0, 0] == x[:, 0, 0, -1]).float().mean().item()
        assert rate == pytest.approx(0.5, abs=0.05)  # 2000 draws: std 0.011

    def test_no_padding_and_no_flip_is_identity(self) -> None:
        x = _images()
        g = torch.Generator().manual_seed(5)
        assert torch.equal(random_crop_flip(x, generator=g, padding=0, flip=False), x)

    def test_does_not_touch_the_global_rng(self) -> None:
        state = torch.get_rng_state()
        random_crop_flip(_images(), generator=torch.Generator().manual_seed(6))
        assert torch.equal(torch.get_rng_state(), state)

    def test_rejects_negative_padding(self) -> None:
        with pytest.raises(ValueError, match="padding"):
            random_crop_flip(_images(), generator=torch.Generator(), padding=-1)

    def test_reflect_crops_are_crops_of_the_reflect_padded_image(self) -> None:
        # The same offsets and flips as zero padding, drawn from the same generator state,
        # read from torch's reflect padding instead: equal wherever the zero crop is
        # inside the image, and never a zero border.
        x = _images(b=32).float() + 1.0
        zeros = random_crop_flip(x, generator=torch.Generator().manual_seed(3), padding=3)
        out = random_crop_flip(
            x, generator=torch.Generator().manual_seed(3), padding=3, pad_mode="reflect"
        )
        padded = torch.nn.functional.pad(x, (3,) * 4, mode="reflect")
        h, w = x.shape[-2:]
        for image, got, zero in zip(padded, out, zeros, strict=True):
            views = [
                v[:, dy : dy + h, dx : dx + w]
                for v in (image, image.flip(2))
                for dy in range(7)
                for dx in range(7)
            ]
            assert any(torch.equal(got, v) for v in views)
            inside = zero != 0
            assert torch.equal(got[inside], zero[inside])
        assert (out > 0).all() and (zeros == 0).any()

    def test_rejects_an_unknown_pad_mode_and_reflection_past_the_image(self) -> None:
        with pytest.raises(ValueError, match="pad_mode must be one of"):
            random_crop_flip(_images(), generator=torch.Generator(), pad_mode="edge")
        h = _images().shape[-2]
        with pytest.raises(ValueError, match="reflect padding must be <"):
            random_crop_flip(_images(), generator=torch.Generator(), padding=h, pad_mode="reflect")


class TestCutout:
    def test_one_square_of_fill_per_image_clipped_by_the_border(self) -> None:
        x = torch.ones(512, 3, 16, 16)
        out = cutout(x, generator=torch.Generator().manual_seed(0), size=6, fill=0.0)
        holes = out[:, 0] == 0  # [B, H, W]
        assert torch.equal(holes[:, None].expand_as(out), out == 0)  # every channel alike
        counts = holes.sum(dim=(1, 2))
        assert counts.max() == 36 and counts.min() >= 9  # whole inside; a corner at least
        assert (counts < 36).any()  # some squares are cut by the border
        for hole in holes:  # the filled pixels form one axis-aligned rectangle
            rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
            assert int(hole.sum()) == len(rows) * len(cols)
            assert len(rows) == int(rows[-1] - rows[0]) + 1 <= 6
        assert torch.equal(x, torch.ones_like(x))  # the input is not modified

    def test_centres_cover_the_image(self) -> None:
        out = cutout(torch.ones(2000, 1, 8, 8), generator=torch.Generator(), size=1, fill=0.0)
        assert ((out == 0).sum(0) > 0).all()  # size 1: every pixel is hit at some point

    def test_same_seed_same_output_and_uint8_fill(self) -> None:
        x = torch.full((4, 3, 8, 8), 7, dtype=torch.uint8)
        a, b = (cutout(x, generator=torch.Generator().manual_seed(3), size=4) for _ in range(2))
        assert torch.equal(a, b) and a.dtype == torch.uint8
        assert set(a.unique().tolist()) == {7, 128}

    @pytest.mark.parametrize(("shape", "size"), [((3, 8, 8), 4), ((1, 3, 8, 8), 0)])
    def test_rejects_bad_input(self, shape: tuple[int, ...], size: int) -> None:
        with pytest.raises(ValueError, match=r"images|size"):
            cutout(torch.ones(shape), generator=torch.Generator(), size=size)
