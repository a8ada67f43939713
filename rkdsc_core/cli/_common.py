"""Helpers shared by the CLI command groups."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rkdsc_core.data.specs import DATASETS

if TYPE_CHECKING:
    from rkdsc_core.config import Settings
    from rkdsc_core.data import ImageDataset
    from rkdsc_core.train.ddp import DistInfo

__all__ = [
    "CacheOpt",
    "CompileOpt",
    "DataOpt",
    "DeviceOpt",
    "command_line",
    "distributed",
    "echo_json",
    "fail",
    "genotype_arg",
    "load_splits",
    "run_settings",
]


def command_line() -> str:
    """The command being run, as a shell line (``rkdsc ...``), for manifests and meta."""
    return shlex.join(["rkdsc", *sys.argv[1:]])


DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="dataset source (image-folder tree or .tar.gz, official CIFAR binary archive or "
        "folder, IDX folder, or a folder holding one); default: data.dir / RKDSC_DATA_DIR",
    ),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="decoded-array cache; default: data.cache_dir"),
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help=f"dataset name, one of: {', '.join(DATASETS)}")
]
InputDatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help=f"dataset name, one of: {', '.join(DATASETS)}; default: the one the input "
        "(the teacher, the cache) was made on",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="torch device: cpu, cuda, cuda:1 (RKDSC_DEVICE; default cpu)."),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the training forward (RKDSC_COMPILE; default off): stage-1 "
        "epochs of the DARTS student took about 40% less time on a 2-core CPU, after a minute "
        "or two of compiling; a run may resume with it on or off.",
    ),
]


@contextlib.contextmanager
def distributed(device: str | None, compile_model: bool = False) -> Iterator[DistInfo]:
    """The torchrun job this command runs in (one process without torchrun); left at exit.

    ``compile_model``: the training loops compile their forward (:attr:`DistInfo.compile`).
    On CUDA, cuDNN benchmarks its convolution kernels once per shape (the shapes are
    fixed) and keeps the fastest; GPU runs are not bit-reproducible in any case.
    """
    import torch

    from rkdsc_core.train.ddp import cleanup_distributed, init_distributed

    info = dataclasses.replace(init_distributed(os.environ, device=device), compile=compile_model)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
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


def run_settings(
    data: Path | None,
    cache_dir: Path | None,
    device: str | None = None,
    compile_model: bool | None = None,
) -> Settings:
    """The settings of a command that trains or measures: files and environment, then options.

    An option left ``None`` keeps the value from ``RKDSC_*`` (or the default). Exits with
    a clear error for a device torch does not know or cannot use here.
    """
    import torch

    from rkdsc_core.config import load_settings

    settings = load_settings(
        overrides={
            "data.dir": data,
            "data.cache_dir": cache_dir,
            "device": device,
            "compile": compile_model,
        }
    )
    try:
        dev = torch.device(settings.device)
    except RuntimeError:
        fail(f"device {settings.device!r} is not a torch device (cpu, cuda, cuda:1, mps)")
        raise
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail(f"device {settings.device!r}: this torch ({torch.__version__}) sees no CUDA GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        fail(f"device {settings.device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return settings
