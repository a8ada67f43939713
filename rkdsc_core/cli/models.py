"""`rkdsc models ...` commands: inspect the registered model zoo."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from rkdsc_core.cli._common import JsonOpt, echo_json, fail
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


def model_info(name: str) -> dict[str, Any]:
    """Build model ``name`` with its defaults and measure it on ``example_inputs(1)``.

    Returns ``{name, params, macs_per_image, input_shape, num_tokens, feature_dim,
    token_dim}``; ``num_tokens``/``feature_dim`` are ``None`` for models without them and
    ``token_dim`` (the dimension of the tokens) defaults to ``feature_dim``.
    """
    # Building a teacher without weights warns once per model; the table says enough.
    quiet = logging.getLogger("rkdsc_core.models")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = create_model(name)
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
    as_json: JsonOpt = False,
) -> None:
    """Parameters, MACs per image, input shape, tokens T and feature dim D of each model."""
    known = list_models()
    selected = names or known
    unknown = [n for n in selected if n not in known]
    if unknown:
        fail(f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(known)}")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in selected:
        try:
            rows.append(model_info(name))
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
