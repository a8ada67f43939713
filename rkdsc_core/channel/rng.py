"""Per-frame random generators: an impairment depends only on (seed, link id, sequence number)."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["GeneratorLike", "draw", "frame_generator", "frame_generators"]

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the whole batch, one per row (frame), or ``None`` (fresh entropy)."""


def frame_generator(
    seed: int, link_id: int | str, seq: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded from ``(seed, link_id, seq)`` only, never from global state.

    The three values are hashed (BLAKE2b) into a 63-bit seed, so neighbouring
    sequence numbers give unrelated streams.
    """
    link = link_id.encode() if isinstance(link_id, str) else struct.pack("<q", int(link_id))
    digest = hashlib.blake2b(
        struct.pack("<qq", int(seed), int(seq)) + b"|" + link, digest_size=8
    ).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def frame_generators(
    seed: int, link_id: int | str, seqs: Sequence[int], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One :func:`frame_generator` per sequence number (a batch of frames of one link)."""
    return [frame_generator(seed, link_id, s, device) for s in seqs]


def draw(
    sampler: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: GeneratorLike,
    *,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw ``sampler(shape, generator=...)`` (``torch.randn``/``torch.rand``) as float32.

    With a sequence of generators, row ``i`` (``shape[0]`` rows) is drawn from
    ``generator[i]`` alone, so a frame's randomness does not depend on its batch.

    A seeded draw is made on its generator's device and then moved to ``device`` (a CPU
    generator gives the same values for a CPU or a GPU tensor). A ``randn`` draw of 16
    values or more is the start of one padded to a multiple of 16: torch's CPU ``randn``
    fills blocks of 16 (and draws under 16 values one by one), so frames of different
    lengths from generators seeded alike see the same AWGN noise and block-fading gain on
    their common symbols, as long as both draws are under 16 values or both are not.
    (``rand`` draws need no padding; draws after a padded one in the same generator, such
    as fast fading's noise, still depend on the length.)
    """
    if generator is None:
        return sampler(shape, generator=None, device=device, dtype=torch.float32)
    if isinstance(generator, torch.Generator):
        return _seeded(sampler, shape, generator, device)
    if len(generator) != shape[0]:
        raise ValueError(
            f"got {len(generator)} generators for a batch of {shape[0]}; pass one per frame"
        )
    # Each row on its generator's device, then the batch moved at once (not row by row).
    rows = [_seeded(sampler, shape[1:], g, g.device) for g in generator]
    if not rows:
        return torch.empty(shape, device=device)
    return torch.stack([r.to(rows[0].device) for r in rows]).to(device)


def _seeded(
    sampler: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str,
) -> Tensor:
    numel = math.prod(shape)
    padded = numel if numel < 16 or sampler is not torch.randn else -(-numel // 16) * 16
    flat = sampler((padded,), generator=generator, device=generator.device, dtype=torch.float32)
    return flat[:numel].reshape(shape).to(device)
