"""Helpers shared by the CLI command groups."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rkdsc_core.config import Settings
    from rkdsc_core.data import ImageDataset
    from rkdsc_core.train.ddp import DistInfo

__all__ = ["distributed", "echo_json", "fail", "genotype_arg", "load_splits"]


@contextlib.contextmanager
def distributed(device: str | None) -> Iterator[DistInfo]:
    """The torchrun job this command runs in (one process without torchrun); left at exit."""
    from rkdsc_core.train.ddp import cleanup_distributed, init_distributed

    info = init_distributed(os.environ, device=device)
    try:
        yield info
    finally:
        cleanup_distributed()


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


def load_splits(
    s: Settings, name: str, splits: tuple[str, ...], info: DistInfo | None = None
) -> tuple[ImageDataset, ...]:
    """Load ``splits`` of dataset ``name``; data errors end the command (exit 2).

    Under DDP rank 0 loads (and on first use decodes into the cache) first, then the rest.
    """
    from rkdsc_core.data import DataSourceError, load_dataset
    from rkdsc_core.train.ddp import barrier

    d = s.resolved_data()
    if info is not None and not info.is_main:
        barrier(info)
    try:
        out = tuple(
            load_dataset(name, split, source=d.dir, cache_dir=d.cache_dir)  # type: ignore[arg-type]
            for split in splits
        )
    except DataSourceError as e:
        fail(str(e))
        raise
    if info is not None and info.is_main:
        barrier(info)
    return out
