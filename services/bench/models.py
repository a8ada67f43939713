"""Benchmark 3: the student's encoder against each teacher: parameters, MACs, CPU images/s.

**student**: what the transmitter runs per image, ``SemanticPipeline.transmit``: the
student's feature extractor (without its classifier head, which runs at the receiver)
and the CAT encoder at ``L`` symbols, pilots included, from the link weights, on 32x32
images (the link's CIFAR-10 size).

**teachers**: ``create_model(name)`` for each name in ``teachers``, its full forward pass
(features and head), randomly initialised: the weights do not change its speed. By default
``resnet18-cifar-w32`` (the former default teacher, 32x32), ``fastnet-cifar`` (the shipped
teacher the shipped links are distilled from, 32x32) and ``clip-vit-b32`` (the paper's CLIP
ViT-B/32 teacher, 224x224, speed and size only). Each
teacher is fed images of its own input size (``Backbone.input_size``, the size its
``example_inputs`` uses and ``rkdsc models info`` counts at), so the timing measures the
network, not the resize every teacher would otherwise do first.

All models run under ``no_grad`` in eval mode on random images at each batch size, with the
same number of torch threads; the timed runs alternate over ``rounds`` rounds (student,
then the teachers in order; the next round in reverse). Parameters and MACs per image are
counted as ``rkdsc models info`` does (:func:`rkdsc_core.models.count_parameters`,
:func:`~rkdsc_core.models.count_macs`).
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
    "ENCODE_SPEED_TARGET",
    "STUDENT_INPUT_SIZE",
    "ModelsBenchConfig",
    "ModelsBenchResult",
    "SpeedPoint",
    "TeacherResult",
    "encoder_parameters",
    "run_models_bench",
]

STUDENT_INPUT_SIZE = 32
"""Side of the images the student encoder is timed on [pixels] (CIFAR-10's)."""

ENCODE_SPEED_TARGET = 10.0
"""The student encoder should encode at least this many times faster than a teacher."""


@dataclass(frozen=True)
class ModelsBenchConfig:
    """What the student/teacher benchmark runs.

    Attributes:
        teachers: registered teacher models, each compared with the student encoder.
        batches: batch sizes to time.
        seconds: least time per model, batch size and round [s].
        rounds: alternating timed rounds.
        threads: torch intra-op threads (``None``: torch's default).
        length: ``L`` for the CAT encoder (``None``: the link's ``l_max``).
        snr_db: the SNR the encoder is conditioned on [dB].
        weights_dir: the link weights (``None``: the shipped ones).
    """

    teachers: tuple[str, ...] = ("resnet18-cifar-w32", "fastnet-cifar", "clip-vit-b32")
    batches: tuple[int, ...] = (1, 64)
    seconds: float = 3.0
    rounds: int = 2
    threads: int | None = 1
    length: int | None = None
    snr_db: float = 20.0
    weights_dir: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.teachers, str):
            raise TypeError(
                f"teachers must be a tuple of model names, got the string {self.teachers!r}; "
                f"write ({self.teachers!r},)"
            )
        if not self.teachers or len(set(self.teachers)) != len(self.teachers):
            raise ValueError(f"teachers must be distinct and not empty, got {self.teachers}")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches must be >= 1, got {self.batches}")
        if self.seconds <= 0 or self.rounds < 1:
            raise ValueError(f"seconds must be > 0 and rounds >= 1, got {self}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")


@dataclass(frozen=True)
class SpeedPoint:
    """Images/s of the student encoder and one teacher at one batch size."""

    batch: int
    student_images_per_s: float
    teacher_images_per_s: float

    @property
    def speedup(self) -> float:
        return self.student_images_per_s / self.teacher_images_per_s


@dataclass(frozen=True)
class TeacherResult:
    """One teacher as measured against the student encoder.

    Attributes:
        name: the registered model.
        input_size: side of the square images it was fed [pixels].
        params: its parameters (head included).
        macs: multiply-accumulates per image at ``input_size``.
        speed: images/s of it and of the student, per batch size.
    """

    name: str
    input_size: int
    params: int
    macs: int
    speed: list[SpeedPoint] = field(default_factory=list)


@dataclass(frozen=True)
class ModelsBenchResult:
    """Student encoder vs each teacher (see the module docstring).

    Attributes:
        student_params: the transmitter's part: student without head + CAT encoder.
        link_params: the whole link (student with head + CAT encoder and decoder).
        student_macs: multiply-accumulates per image at ``student_input_size``.
        teachers: one entry per teacher, in ``config.teachers`` order.
    """

    config: ModelsBenchConfig
    length: int
    student_input_size: int
    student_params: int
    link_params: int
    student_macs: int
    teachers: list[TeacherResult] = field(default_factory=list)

    def teacher(self, name: str) -> TeacherResult:
        """The result of teacher ``name``."""
        for t in self.teachers:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.teachers)
        raise KeyError(f"no teacher {name!r} in this result; it has {known}")

    def figures(self) -> list[Figure]:
        """Per teacher: parameters, MACs per image, encode speed at each batch size."""
        size = self.student_input_size
        student = "student + CAT encoder"
        figs: list[Figure] = []
        for t in self.teachers:
            at = f"{t.input_size}x{t.input_size}"
            figs += [
                Figure(
                    f"parameters vs {t.name}",
                    "count",
                    self.student_params,
                    t.params,
                    ratio_of="baseline/system",
                    system_label=student,
                    baseline_label=t.name,
                ),
                Figure(
                    f"MACs per image vs {t.name}",
                    "MACs",
                    self.student_macs,
                    t.macs,
                    ratio_of="baseline/system",
                    system_label=f"{student}, L={self.length}, {size}x{size}",
                    baseline_label=f"{t.name}, {at}",
                ),
            ]
            figs += [
                Figure(
                    f"encode speed vs {t.name}, batch {p.batch}",
                    "images/s",
                    p.student_images_per_s,
                    p.teacher_images_per_s,
                    target=ENCODE_SPEED_TARGET,
                    system_label=f"{student}, {size}x{size}",
                    baseline_label=f"{t.name} forward, {at}",
                )
                for p in t.speed
            ]
        return figs

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"]["weights_dir"] = (
            None if self.config.weights_dir is None else str(self.config.weights_dir)
        )
        for teacher, doc in zip(self.teachers, out["teachers"], strict=True):
            for point, point_doc in zip(teacher.speed, doc["speed"], strict=True):
                point_doc["speedup"] = point.speedup
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


def _input_size(name: str, model: nn.Module) -> int:
    """The side of the square images ``model`` takes natively (``Backbone.input_size``)."""
    size = getattr(model, "input_size", None)
    if not isinstance(size, int) or size < 1:
        raise TypeError(
            f"teacher {name!r} does not declare its input size (an image model's "
            f"input_size, as rkdsc_core.models.Backbone has); pick an image classifier"
        )
    return size


def _images(batch: int, size: int) -> Tensor:
    """Random images ``[batch, 3, size, size]`` float32 in [0, 1], the same for each call."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))


def run_models_bench(
    config: ModelsBenchConfig, *, progress: Callable[[str], None] | None = None
) -> ModelsBenchResult:
    """Count and time the student encoder and each teacher (see the module docstring)."""
    say = progress or (lambda _msg: None)
    pipeline = load_link(config.weights_dir).pipeline
    length = config.length if config.length is not None else max(pipeline.lengths)
    models: dict[str, nn.Module] = {"student": _Transmit(pipeline, config.snr_db, length).eval()}
    sizes = {"student": STUDENT_INPUT_SIZE}
    for name in config.teachers:
        say(f"models: building {name} (random weights)")
        models[name] = _teacher(name)
        sizes[name] = _input_size(name, models[name])
    macs: dict[str, int] = {}
    for name, model in models.items():
        say(f"models: counting MACs of {name} at {sizes[name]}x{sizes[name]}")
        macs[name] = count_macs(model, _images(1, sizes[name]))
    done = {(m, b): [0.0, 0.0] for m in models for b in config.batches}
    with torch_threads(config.threads), torch.no_grad():
        for r in range(config.rounds):
            order = list(models) if r % 2 == 0 else list(reversed(models))
            for batch in config.batches:
                for name in order:
                    say(f"models: round {r + 1}/{config.rounds}, batch {batch}, {name}")
                    model, x = models[name], _images(batch, sizes[name])
                    images, seconds = timed(
                        lambda model=model, x=x: model(x),  # type: ignore[misc]
                        work=batch,
                        min_seconds=config.seconds,
                    )
                    done[name, batch][0] += images
                    done[name, batch][1] += seconds

    def per_s(name: str, batch: int) -> float:
        return done[name, batch][0] / done[name, batch][1]

    teachers = [
        TeacherResult(
            name=name,
            input_size=sizes[name],
            params=count_parameters(models[name]),
            macs=macs[name],
            speed=[
                SpeedPoint(
                    batch=b,
                    student_images_per_s=per_s("student", b),
                    teacher_images_per_s=per_s(name, b),
                )
                for b in config.batches
            ],
        )
        for name in config.teachers
    ]
    return ModelsBenchResult(
        config=config,
        length=length,
        student_input_size=STUDENT_INPUT_SIZE,
        student_params=encoder_parameters(pipeline),
        link_params=count_parameters(pipeline),
        student_macs=macs["student"],
        teachers=teachers,
    )
