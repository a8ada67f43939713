"""Helpers shared by the CLI command groups."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

__all__ = ["echo_json", "fail"]


def echo_json(obj: Any) -> None:
    """Write ``obj`` as indented JSON to stdout."""
    typer.echo(json.dumps(obj, indent=2))


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)
