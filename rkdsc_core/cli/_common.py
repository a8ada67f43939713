"""Helpers shared by the CLI command groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["echo_json", "fail", "genotype_arg"]


def echo_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout."""
    typer.echo(json.dumps(obj, indent=2))


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def genotype_arg(value: str) -> str | dict[str, Any]:
    """A reference name, a JSON object or a JSON file: a genotype dict or ``{"genotype": ...}``."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            return value  # a reference name; create_model validates it
        text = path.read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"--genotype is neither a name nor valid JSON: {e}")
        raise
    genotype = doc.get("genotype", doc) if isinstance(doc, dict) else doc
    if not isinstance(genotype, dict):
        fail("--genotype JSON must be a genotype dict (or hold one under 'genotype')")
    return genotype  # type: ignore[no-any-return]
