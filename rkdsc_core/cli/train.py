"""`rkdsc train ...` and `rkdsc eval ...` commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rkdsc_core.cli._common import echo_json, fail

__all__ = ["eval_app", "train_app"]

train_app = typer.Typer(
    help="Training recipes (resumable; checkpoints every epoch).", no_args_is_help=True
)
eval_app = typer.Typer(help="Measure links.", no_args_is_help=True)

DataOpt = Annotated[Path | None, typer.Option("--data", help="Dataset source (RKDSC_DATA_DIR).")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Decoded-data cache.")]


def _datasets(data: Path | None, cache_dir: Path | None, name: str):  # type: ignore[no-untyped-def]
    from rkdsc_core.config import load_settings
    from rkdsc_core.data import DataSourceError, load_dataset

    s = load_settings(overrides={"data.dir": data, "data.cache_dir": cache_dir}).resolved_data()
    try:
        return (
            load_dataset(name, "train", source=s.dir, cache_dir=s.cache_dir),
            load_dataset(name, "test", source=s.dir, cache_dir=s.cache_dir),
        )
    except DataSourceError as e:
        fail(str(e))
        raise


@train_app.command("link")
def train_link_cmd(
    out: Annotated[Path, typer.Option(help="Run folder: training state, logs, weights.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 12).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 128).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    weights_out: Annotated[
        Path | None, typer.Option(help="Where to write the link bundle (default OUT/weights).")
    ] = None,
    eval_limit: Annotated[int, typer.Option(help="Test images for the eval table.")] = 1000,
    fp16: Annotated[bool, typer.Option(help="Store weights as float16.")] = True,
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """End-to-end link training through the channel, cross-entropy only (no teacher)."""
    import dataclasses

    from rkdsc_core.eval import measure_eval_table
    from rkdsc_core.link import save_link
    from rkdsc_core.train import LinkTrainConfig, train_link

    train, test = _datasets(data, cache_dir, dataset)
    overrides: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
    cfg = dataclasses.replace(
        LinkTrainConfig(), **{k: v for k, v in overrides.items() if v is not None}
    )
    out.mkdir(parents=True, exist_ok=True)
    pipeline, summary = train_link(cfg, train, test, out, device=device)
    pipeline.cpu()
    table = measure_eval_table(pipeline, test, limit=eval_limit)
    table.meta["command"] = shlex.join(["rkdsc", *sys.argv[1:]])
    dest = weights_out or out / "weights"
    save_link(
        dest,
        pipeline,
        student_name=cfg.student,
        classes=train.classes,
        eval_table=table,
        fp16=fp16,
        meta={
            "recipe": "end-to-end cross-entropy through the channel (no teacher)",
            "dataset": {"name": train.name, "sha256": train.source_sha256},
            "training": summary,
        },
        metrics={"history": summary["history"]},
    )
    typer.echo(f"wrote {dest} (AWGN 20 dB accuracy {summary['history'][-1]['acc_awgn_20db']:.4f})")


@eval_app.command("table")
def eval_table_cmd(
    weights: Annotated[
        Path | None, typer.Option(help="Link weights folder (default shipped).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Test images.")] = 1000,
    knowledge: Annotated[str, typer.Option(help="perfect | pilot | none")] = "pilot",
    out: Annotated[Path | None, typer.Option(help="Write the table JSON here.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Accuracy per channel model, L and SNR (-10..24 dB) on the test split."""
    from rkdsc_core.eval import measure_eval_table
    from rkdsc_core.link import load_link

    _, test = _datasets(data, cache_dir, dataset)
    bundle = load_link(weights)
    table = measure_eval_table(bundle.pipeline, test, limit=limit, knowledge=knowledge)
    if out is not None:
        table.save(out)
    if as_json:
        echo_json(table.to_json())
        return
    for model, by_len in table.accuracy.items():
        typer.echo(f"{model}: accuracy by L (rows) and SNR [dB] (columns), {limit} images")
        typer.echo("   L " + " ".join(f"{s:5.0f}" for s in table.snr_db))
        for n, row in by_len.items():
            typer.echo(f"{n:4d} " + " ".join(f"{a:5.3f}" for a in row))
