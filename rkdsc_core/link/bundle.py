"""A deployable link: student + CAT weights, class names and the measured accuracy table.

Layout of a weights folder::

    student.safetensors / student.json   the semantic encoder + head (a checkpoint)
    codec.safetensors / codec.json       the CAT encoder/decoder (a checkpoint)
    link.json                            num_pilots, class names, dataset, provenance
    eval_table.json                      optional: accuracy per channel model, L and SNR

The default folder ships inside the package (``rkdsc_core/weights/default``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rkdsc_core.checkpoint import CheckpointError, load_model, save_checkpoint
from rkdsc_core.link.eval_table import EvalTable
from rkdsc_core.link.pipeline import SemanticPipeline
from rkdsc_core.models.base import Backbone
from rkdsc_core.models.cat import CATCodec

__all__ = ["LinkBundle", "default_weights_dir", "load_link", "save_link"]


def default_weights_dir() -> Path:
    """The weights shipped with rkdsc (see ``rkdsc_core/weights/default/MODEL_CARD.md``)."""
    return Path(__file__).resolve().parent.parent / "weights" / "default"


@dataclass(frozen=True)
class LinkBundle:
    """Everything a transmitter or receiver needs to run the link."""

    pipeline: SemanticPipeline
    classes: tuple[str, ...]
    eval_table: EvalTable | None
    meta: dict[str, Any]
    weights_dir: Path


def save_link(
    weights_dir: Path,
    pipeline: SemanticPipeline,
    *,
    student_name: str,
    classes: tuple[str, ...] | list[str],
    eval_table: EvalTable | None = None,
    fp16: bool = False,
    meta: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write a weights folder (see the module docstring).

    Raises:
        ValueError: before anything is written, for a folder :func:`load_link` would refuse:
            a class name count other than the student's classes, or an eval table measured
            at an ``L`` the codec does not send.
    """
    if len(classes) != pipeline.student.num_classes:
        raise ValueError(
            f"{len(classes)} class names for a student with {pipeline.student.num_classes} classes"
        )
    if eval_table is not None:
        eval_table.check_lengths(pipeline.codec.config.lengths)
    weights_dir.mkdir(parents=True, exist_ok=True)
    genotype = getattr(pipeline.student.config, "genotype", None)
    save_checkpoint(
        weights_dir / "student",
        pipeline.student,
        name=student_name,
        fp16=fp16,
        genotype=genotype,
        metrics=metrics,
    )
    save_checkpoint(weights_dir / "codec", pipeline.codec, name="cat-codec", fp16=fp16)
    # The pipeline's and the arguments' facts win over a ``meta`` copied from an older bundle.
    doc = {**(meta or {}), "num_pilots": pipeline.num_pilots, "classes": list(classes)}
    (weights_dir / "link.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = weights_dir / "eval_table.json"
    if eval_table is not None:
        eval_table.save(table)
    else:
        table.unlink(missing_ok=True)  # an old table measured other weights


def load_link(weights_dir: Path | None = None, *, device: torch.device | str = "cpu") -> LinkBundle:
    """Load a weights folder (default: the shipped one) in eval mode on ``device``.

    Raises:
        FileNotFoundError: no ``link.json`` in the folder.
        CheckpointError: naming the file, when any file of the folder is unreadable,
            truncated or fails its checksum (see :func:`rkdsc_core.checkpoint.load_checkpoint`),
            or naming the folder, when its student and codec are not a link or do not fit
            together.
    """
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    link_json = folder / "link.json"
    if not link_json.is_file():
        raise FileNotFoundError(
            f"no link weights at {folder}: expected link.json, student.* and codec.* "
            "(made by `rkdsc train link` or rkdsc_core.link.save_link)"
        )
    meta, num_pilots, classes = _read_link_json(link_json)
    student = load_model(folder / "student")
    codec = load_model(folder / "codec")
    if not isinstance(student, Backbone) or not isinstance(codec, CATCodec):
        raise CheckpointError(f"{folder}: student must be a Backbone and codec a CATCodec")
    if len(classes) != student.num_classes:
        raise CheckpointError(
            f"{link_json}: {len(classes)} class names for a student with "
            f"{student.num_classes} classes"
        )
    try:
        pipeline = SemanticPipeline(student, codec, num_pilots=num_pilots).to(device)
    except ValueError as e:  # e.g. the student's token shape is not the codec's
        raise CheckpointError(f"{folder}: its student and codec do not fit together: {e}") from e
    table_path = folder / "eval_table.json"
    table = None
    if table_path.is_file():
        try:
            table = EvalTable.load(table_path)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{table_path} is not a valid eval table: {e!r}") from e
        try:
            table.check_lengths(codec.config.lengths)
        except ValueError as e:
            raise CheckpointError(f"{table_path}: {e}") from e
    return LinkBundle(pipeline.eval(), classes, table, meta, folder)


def _read_link_json(path: Path) -> tuple[dict[str, Any], int, tuple[str, ...]]:
    """``(meta, num_pilots, classes)`` from a ``link.json``; CheckpointError naming it."""
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise TypeError(f"expected a JSON object, got {type(meta).__name__}")
        num_pilots, classes = meta["num_pilots"], meta["classes"]
        if type(num_pilots) is not int or num_pilots < 2:
            raise ValueError(f"'num_pilots' must be an integer >= 2, got {num_pilots!r}")
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise TypeError("'classes' must be a list of class names")
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a valid link description (JSON with 'num_pilots' and 'classes'): {e!r}"
        ) from e
    return meta, num_pilots, tuple(classes)
