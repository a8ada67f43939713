"""Benchmark 3: the student's encoder against the teacher: parameters, MACs, CPU images/s.

**student**: what the transmitter runs per image, ``SemanticPipeline.transmit``: the
student's feature extractor (without its classifier head, which runs at the receiver)
and the CAT encoder at ``L`` symbols, pilots included, from the link weights.

**teacher**: ``create_model(teacher)`` (``resnet18-cifar-w32`` by default, the CPU teacher
of the RKD recipe), its full forward pass (features and head). Randomly initialised: the
weights do not change its speed.

Both run under ``no_grad`` in eval mode on the same random 32x32 images at each batch size,
with the same number of torch threads; the timed runs alternate between the two over
``rounds`` rounds. Parameters and MACs per image are counted as ``rkdsc models info``
does (:func:`rkdsc_core.models.count_parameters`, :func:`~rkdsc_core.models.count_macs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rkdsc_core.link import SemanticPipeline, load_link
from rkdsc_core.models import count_macs, count_parameters, create_model
from services.bench._common import Figure, timed, torch_threads

__all__ = [
    "ModelsBenchConfig",
    "ModelsBenchResult",
    "SpeedPoint",
    "encoder_parameters",
    "run_models_bench",
]


@dataclass(frozen=True)
class ModelsBenchConfig:
    """What the student/teacher benchmark runs.

    Attributes:
        teacher: registered teacher model.
        batches: batch sizes to time.
        seconds: least time per model, batch size and round [s].
        rounds: alternating timed rounds.
        threads: torch intra-op threads (``None``: torch's default).
        length: ``L`` for the CAT encoder (``None``: the link's ``l_max``).
        snr_db: the SNR the encoder is conditioned on [dB].
        weights_dir: the link weights (``None``: the shipped ones).
    """

    teacher: str = "resnet18-cifar-w32"
    batches: tuple[int, ...] = (1, 64)
    seconds: float = 3.0
    rounds: int = 2
    threads: int | None = 1
    length: int | None = None
    snr_db: float = 20.0
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches must be >= 1, got {self.batches}")
        if self.seconds <= 0 or self.rounds < 1:
            raise ValueError(f"seconds must be > 0 and rounds >= 1, got {self}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")


@dataclass(frozen=True)
class SpeedPoint:
    """Images/s of both models at one batch size."""

    batch: int
    student_images_per_s: float
    teacher_images_per_s: float

    @property
    def speedup(self) -> float:
        return self.student_images_per_s / self.teacher_images_per_s


@dataclass(frozen=True)
class ModelsBenchResult:
    """Student encoder vs teacher (see the module docstring).

    Attributes:
        student_params: the transmitter's part: student without head + CAT encoder.
        link_params: the whole link (student with head + CAT encoder and decoder).
        student_macs / teacher_macs: multiply-accumulates per image.
    """

    config: ModelsBenchConfig
    teacher: str
    length: int
    student_params: int
    link_params: int
    teacher_params: int
    student_macs: int
    teacher_macs: int
    speed: list[SpeedPoint] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        figs = [
            Figure(
                "parameters",
                "count",
                self.student_params,
                self.teacher_params,
                ratio_of="baseline/system",
                system_label="student + CAT encoder",
                baseline_label=self.teacher,
            ),
            Figure(
                "MACs per image",
                "MACs",
                self.student_macs,
                self.teacher_macs,
                ratio_of="baseline/system",
                system_label=f"student + CAT encoder, L={self.length}",
                baseline_label=self.teacher,
            ),
        ]
        for p in self.speed:
            figs.append(
                Figure(
                    f"encode speed, batch {p.batch}",
                    "images/s",
                    p.student_images_per_s,
                    p.teacher_images_per_s,
                    target=10.0,
                    system_label="student + CAT encoder",
                    baseline_label=f"{self.teacher} forward",
                )
            )
        return figs

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"]["weights_dir"] = (
            None if self.config.weights_dir is None else str(self.config.weights_dir)
        )
        for point, doc in zip(self.speed, out["speed"], strict=True):
            doc["speedup"] = point.speedup
        return out


class _Transmit(nn.Module):
    """``pipeline.transmit`` as a module (for :func:`count_macs`)."""

    def __init__(self, pipeline: SemanticPipeline, snr_db: float, length: int) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.snr_db = snr_db
        self.length = length

    def forward(self, images: Tensor) -> Tensor:
        return self.pipeline.transmit(images, self.snr_db, self.length).frame


def encoder_parameters(pipeline: SemanticPipeline) -> int:
    """Parameters the transmitter uses: the student without its ``head`` + the CAT encoder."""
    head = getattr(pipeline.student, "head", None)
    head_params = count_parameters(head) if isinstance(head, nn.Module) else 0
    return (
        count_parameters(pipeline.student) - head_params + count_parameters(pipeline.codec.encoder)
    )


def _teacher(name: str) -> nn.Module:
    quiet = logging.getLogger("rkdsc_core.models")  # "no weights" warnings: random init is meant
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return create_model(name).eval()
    finally:
        quiet.setLevel(level)


def run_models_bench(
    config: ModelsBenchConfig, *, progress: Callable[[str], None] | None = None
) -> ModelsBenchResult:
    """Count and time both models (see the module docstring)."""
    say = progress or (lambda _msg: None)
    pipeline = load_link(config.weights_dir).pipeline
    length = config.length if config.length is not None else max(pipeline.lengths)
    student = _Transmit(pipeline, config.snr_db, length).eval()
    teacher = _teacher(config.teacher)
    one = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    say(f"models: counting MACs of the student encoder and {config.teacher}")
    student_macs = count_macs(student, one)
    teacher_macs = count_macs(teacher, one)
    models = {"student": student, "teacher": teacher}
    done = {(m, b): [0.0, 0.0] for m in models for b in config.batches}
    with torch_threads(config.threads), torch.no_grad():
        for r in range(config.rounds):
            order = ("student", "teacher") if r % 2 == 0 else ("teacher", "student")
            for batch in config.batches:
                x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
                for name in order:
                    say(f"models: round {r + 1}/{config.rounds}, {name}, batch {batch}")
                    model = models[name]
                    images, seconds = timed(
                        lambda model=model, x=x: model(x),  # type: ignore[misc]
                        work=batch,
                        min_seconds=config.seconds,
                    )
                    done[name, batch][0] += images
                    done[name, batch][1] += seconds
    speed = [
        SpeedPoint(
            batch=b,
            student_images_per_s=done["student", b][0] / done["student", b][1],
            teacher_images_per_s=done["teacher", b][0] / done["teacher", b][1],
        )
        for b in config.batches
    ]
    return ModelsBenchResult(
        config=config,
        teacher=config.teacher,
        length=length,
        student_params=encoder_parameters(pipeline),
        link_params=count_parameters(pipeline),
        teacher_params=count_parameters(teacher),
        student_macs=student_macs,
        teacher_macs=teacher_macs,
        speed=speed,
    )
