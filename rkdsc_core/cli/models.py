"""`rkdsc models ...` commands: inspect the registered model zoo."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rkdsc_core.cli._common import (
    CacheOpt,
    DataOpt,
    DeviceOpt,
    JsonOpt,
    command_line,
    echo_json,
    fail,
    load_splits,
    run_settings,
)
from rkdsc_core.models.complexity import count_macs, count_parameters
from rkdsc_core.registry import create_model, list_models

__all__ = ["app", "model_info"]

app = typer.Typer(help="Model zoo: teachers, student and codec.", no_args_is_help=True)

_COLUMNS = (
    ("name", "name", 20),
    ("params", "params", 12),
    ("macs_per_image", "MACs/image", 14),
    ("input_shape", "input", 16),
    ("num_tokens", "T", 5),
    ("feature_dim", "D", 6),
    ("token_dim", "D_tok", 6),
)


def model_info(name: str, **overrides: Any) -> dict[str, Any]:
    """Build model ``name`` (its defaults, with ``overrides`` for its factory) and measure
    it on ``example_inputs(1)``.

    Returns ``{name, params, macs_per_image, input_shape, num_tokens, feature_dim,
    token_dim}``, plus ``overrides`` when some were given; ``num_tokens``/``feature_dim``
    are ``None`` for models without them and ``token_dim`` (the dimension of the tokens)
    defaults to ``feature_dim``.
    """
    # Building a teacher without weights warns once per model; the table says enough.
    quiet = logging.getLogger("rkdsc_core.models")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = create_model(name, **overrides)
    finally:
        quiet.setLevel(level)
    example = getattr(model, "example_inputs", None)
    if example is None:
        raise TypeError(f"model {name!r} has no example_inputs(batch) method")
    inputs = tuple(example(1))
    batch = int(inputs[0].shape[0]) if inputs and hasattr(inputs[0], "shape") else 1
    feature_dim = getattr(model, "feature_dim", None)
    return {
        "name": name,
        **({"overrides": overrides} if overrides else {}),
        "params": count_parameters(model),
        "macs_per_image": count_macs(model, *inputs) // max(batch, 1),
        "input_shape": [list(x.shape) for x in inputs]
        if len(inputs) > 1
        else list(inputs[0].shape),
        "num_tokens": getattr(model, "num_tokens", None),
        "feature_dim": feature_dim,
        "token_dim": getattr(model, "token_dim", feature_dim),
    }


@app.command("info")
def info_cmd(
    names: Annotated[
        list[str] | None,
        typer.Option("--name", help="Model to describe; repeat for several. Default: all."),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="A field of the named models' config, e.g. --set C=40 --set layers=5 for "
            "darts-student; VALUE is read as JSON, else as a string. Repeatable; needs --name.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parameters, MACs per image, input shape, tokens T and feature dim D of each model."""
    known = list_models()
    selected = names or known
    unknown = [n for n in selected if n not in known]
    if unknown:
        fail(f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(known)}")
    overrides = _parse_settings(settings or [])
    if overrides and not names:
        fail("--set needs --name: the fields are those of the named models' configs")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in selected:
        try:
            rows.append(model_info(name, **overrides))
        except Exception as e:  # one broken or uninstalled model must not hide the others
            sys.stderr.write(f"error: {name}: {type(e).__name__}: {e}\n")
            failed.append(name)
    if as_json:
        echo_json(rows)
    else:
        typer.echo(
            " ".join(
                f"{title:>{w}}" if i else f"{title:<{w}}"
                for i, (_, title, w) in enumerate(_COLUMNS)
            )
        )
        for row in rows:
            typer.echo(" ".join(_cell(row[key], w, i) for i, (key, _, w) in enumerate(_COLUMNS)))
    if failed:
        raise typer.Exit(1)


def _parse_settings(settings: list[str]) -> dict[str, Any]:
    """``["C=40", "genotype=darts_v2"]`` -> ``{"C": 40, "genotype": "darts_v2"}``."""
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            fail(f"--set takes KEY=VALUE with KEY a config field name, got {item!r}")
        if key in out:
            fail(f"--set {key} given twice")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


@app.command("ensemble")
def ensemble_cmd(
    members: Annotated[
        list[Path],
        typer.Argument(help="Two or more trained teacher checkpoints (e.g. RUN/teacher/teacher)."),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the ensemble checkpoint.")],
    eval_images: Annotated[
        int | None,
        typer.Option(help="Test images to score it on, a fixed sample (default all; 0: skip)."),
    ] = None,
    fp16: Annotated[bool, typer.Option(help="Store weights as float16.")] = True,
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Join trained teachers into one teacher: mean log-probabilities, features side by side.

    Nothing is trained. The manifest records each member (path, weights sha256, metrics,
    command) and the ensemble's test accuracy with flip TTA, like `rkdsc train teacher`'s.
    Use it as any teacher: `rkdsc train cache-teacher --teacher OUT`.
    """
    from rkdsc_core.checkpoint import CheckpointError, save_checkpoint
    from rkdsc_core.models.ensemble import join_checkpoints
    from rkdsc_core.train.teacher import evaluate_teacher

    if eval_images is not None and eval_images < 0:
        fail(f"--eval-images must be >= 0 (0: skip), got {eval_images}")
    try:
        model, dataset, provenance = join_checkpoints(members)
    except (CheckpointError, ValueError, TypeError) as e:
        fail(str(e))
    if fp16:  # score the weights that are saved: what loading the float16 file gives back
        model = model.half().float()
    metrics: dict[str, Any] = {}
    if eval_images != 0:
        name = (dataset or {}).get("name", "cifar10")
        s = run_settings(data, cache_dir, device)
        (test,) = load_splits(s, name, ("test",))
        want = (dataset or {}).get("sha256")
        if want is not None and want != test.source_sha256:
            fail(
                f"the members were trained on a {name} copy with sha256 {want[:12]}..., but "
                f"--data / RKDSC_DATA_DIR holds one with {test.source_sha256[:12]}...; point it "
                "at the same copy, or pass --eval-images 0"
            )
        acc = evaluate_teacher(model.to(s.device), test, limit=eval_images)  # scored there
        images = len(test) if eval_images is None else min(eval_images, len(test))
        metrics = {**acc, "test_images": images, "flip_tta": True}
    manifest = save_checkpoint(
        out,
        model,
        name="ensemble",
        fp16=fp16,
        dataset=dataset,
        metrics=metrics,
        extra={"members": provenance},
        command=command_line(),
    )
    score = f", test accuracy {metrics['test_accuracy']:.4f} (flip TTA)" if metrics else ""
    typer.echo(
        f"wrote {manifest}: {len(provenance)} members, {count_parameters(model):,} parameters, "
        f"feature dim {model.feature_dim}{score}"
    )


def _cell(value: Any, width: int, column: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, list) and value and isinstance(value[0], list):
        text = "+".join("x".join(str(v) for v in shape) for shape in value)  # several inputs
    elif isinstance(value, list):
        text = "x".join(str(v) for v in value)
    elif isinstance(value, int) and width >= 12:
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text:<{width}}" if column == 0 else f"{text:>{width}}"
