"""Seeded draws: per-frame generators, shared prefixes across frame lengths, devices."""

from __future__ import annotations

import pytest
import torch

from rkdsc_core.channel import frame_generator
from rkdsc_core.channel.rng import draw


@pytest.mark.parametrize(("short", "long"), [(20, 72), (36, 144), (18, 8232), (3, 14)])
def test_frames_of_different_lengths_share_their_noise_prefix(short: int, long: int) -> None:
    # torch's CPU randn alone gives different values from symbol 4 of 20 vs 72 on: the
    # same frame must see the same noise whatever the length sent.
    a = draw(torch.randn, (short,), frame_generator(0, "eval", 7))
    b = draw(torch.randn, (long,), frame_generator(0, "eval", 7))
    assert torch.equal(a, b[:short])


def test_one_generator_per_row_is_independent_of_the_batch() -> None:
    gens = [frame_generator(1, 0, s) for s in range(3)]
    rows = draw(torch.randn, (3, 5, 2), gens)
    alone = draw(torch.randn, (5, 2), frame_generator(1, 0, 1))
    assert rows.shape == (3, 5, 2) and rows.dtype == torch.float32
    assert torch.equal(rows[1], alone)
    with pytest.raises(ValueError, match="one per frame"):
        draw(torch.randn, (2, 5), gens)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_generator_draws_the_same_values_for_a_gpu_tensor() -> None:
    cpu = draw(torch.randn, (4, 9), frame_generator(2, 0, 0))
    gpu = draw(torch.randn, (4, 9), frame_generator(2, 0, 0), device="cuda")
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
