"""Benchmark 4: bytes on the air per image against PNG and JPEG files of the same images.

**system**: what the transmitter sends per image, ``L`` complex symbols, counted two ways:
``L`` channel uses, and ``8 L`` bytes as float32 complex numbers (what a ``SymbolFrame``
carries). The ``P`` pilot symbols per frame are reported separately (they estimate the
channel and carry no image information).

**baseline**: the same images saved by Pillow as PNG (default compression) and as JPEG at
quality 75 and 90 (4:2:0 subsampling, Pillow's default), file sizes in bytes; and the raw
pixels, ``H * W * 3`` bytes. The ratios say how many times fewer bytes the symbols take.
A digital link would still need channel coding and modulation on top of the file bytes;
the semantic link's accuracy at each ``L`` is in the link's eval table, not here.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rkdsc_core.link import load_link
from services._wire import COMPLEX64_BYTES
from services.bench._common import Figure
from services.bench._images import BenchImages

__all__ = ["AirBenchConfig", "AirBenchResult", "LengthRow", "file_sizes", "run_air_bench"]

JPEG_QUALITIES = (75, 90)


@dataclass(frozen=True)
class AirBenchConfig:
    """What the bytes-on-air benchmark counts.

    Attributes:
        images: images to encode as PNG/JPEG (at most those loaded).
        weights_dir: the link whose ``P`` and allowed ``L`` are counted (``None``: shipped).
    """

    images: int = 1000
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")


@dataclass(frozen=True)
class LengthRow:
    """One allowed ``L``: channel uses and bytes per image."""

    length: int
    channel_uses: int
    channel_uses_with_pilots: int
    float32_bytes: int
    float32_bytes_with_pilots: int


@dataclass(frozen=True)
class AirBenchResult:
    """Per-image sizes [bytes] (means over the images) and the link's symbol counts.

    Attributes:
        source: where the images came from; ``synthetic``: True if not a dataset.
        image_shape: ``[H, W, C]``.
        raw_bytes: ``H * W * C``.
        png_bytes, jpeg_bytes: mean file sizes; ``jpeg_bytes`` by quality.
        num_pilots: ``P``.
        lengths: one row per allowed ``L`` (smallest first).
    """

    config: AirBenchConfig
    images: int
    source: str
    synthetic: bool
    image_shape: list[int]
    raw_bytes: int
    png_bytes: float
    jpeg_bytes: dict[int, float]
    num_pilots: int
    lengths: list[LengthRow] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        figs = []
        for row in dict.fromkeys((self.lengths[-1], self.lengths[0])):  # one row if one L
            label = f"L={row.length} complex float32 (8L)"
            figs.append(
                Figure(
                    f"bytes/image vs PNG, L={row.length}",
                    "bytes",
                    row.float32_bytes,
                    self.png_bytes,
                    ratio_of="baseline/system",
                    system_label=label,
                    baseline_label="PNG",
                )
            )
            for q, size in self.jpeg_bytes.items():
                figs.append(
                    Figure(
                        f"bytes/image vs JPEG q{q}, L={row.length}",
                        "bytes",
                        row.float32_bytes,
                        size,
                        ratio_of="baseline/system",
                        system_label=label,
                        baseline_label=f"JPEG quality {q}",
                    )
                )
        return figs

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"]["weights_dir"] = (
            None if self.config.weights_dir is None else str(self.config.weights_dir)
        )
        out["jpeg_bytes"] = {str(q): v for q, v in self.jpeg_bytes.items()}
        return out


def file_sizes(pixels: np.ndarray[Any, Any]) -> dict[str, int]:
    """Sizes [bytes] of one ``[H, W, 3]`` uint8 image as PNG and JPEG files (Pillow)."""
    im = Image.fromarray(pixels)
    out = {}
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out["png"] = buf.tell()
    for q in JPEG_QUALITIES:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        out[f"jpeg{q}"] = buf.tell()
    return out


def run_air_bench(
    config: AirBenchConfig,
    images: BenchImages,
    *,
    progress: Callable[[str], None] | None = None,
) -> AirBenchResult:
    """Count the link's symbols and encode the images as PNG/JPEG (see the module docstring)."""
    say = progress or (lambda _msg: None)
    pipeline = load_link(config.weights_dir).pipeline
    n = min(config.images, len(images))
    say(f"air: PNG and JPEG sizes of {n} images")
    sizes = [file_sizes(images.pixels[i]) for i in range(n)]
    p = pipeline.num_pilots
    rows = [
        LengthRow(
            length=L,
            channel_uses=L,
            channel_uses_with_pilots=p + L,
            float32_bytes=COMPLEX64_BYTES * L,
            float32_bytes_with_pilots=COMPLEX64_BYTES * (p + L),
        )
        for L in sorted(pipeline.lengths)
    ]
    h, w, c = images.pixels.shape[1:]
    return AirBenchResult(
        config=config,
        images=n,
        source=images.source,
        synthetic=images.synthetic,
        image_shape=[h, w, c],
        raw_bytes=h * w * c,
        png_bytes=float(np.mean([s["png"] for s in sizes])),
        jpeg_bytes={q: float(np.mean([s[f"jpeg{q}"] for s in sizes])) for q in JPEG_QUALITIES},
        num_pilots=p,
        lengths=rows,
    )
