"""`rkdsc data ...` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rkdsc_core.cli._common import CacheOpt, DataOpt, DatasetOpt, JsonOpt, echo_json, fail
from rkdsc_core.config import load_settings
from rkdsc_core.data import (
    DATASETS,
    DataSourceError,
    cache_path,
    download,
    get_spec,
    prepare_dataset,
    resolve_source,
)

__all__ = ["app"]

app = typer.Typer(help="Datasets: list, decode into the cache, download.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="settings file (.yaml/.json), loaded first")
]


@app.command("prepare")
def prepare_cmd(
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Decode a dataset into the cache (once per source) and print counts and checksum."""
    try:
        settings = load_settings(config, overrides={"data.dir": data, "data.cache_dir": cache_dir})
        ds = settings.resolved_data()
        source = resolve_source(get_spec(dataset), ds.dir)
        splits = prepare_dataset(dataset, source=source.path, cache_dir=ds.cache_dir)
    except (DataSourceError, ValueError, OSError) as err:
        fail(str(err))
        return
    first = next(iter(splits.values()))
    report: dict[str, Any] = {
        "dataset": dataset,
        "source": str(source.path),
        "source_format": source.format,
        "source_sha256": first.source_sha256,
        "cache": str(cache_path(ds.cache_dir, first.name, first.source_sha256)),
        "splits": {
            name: {
                "count": len(split),
                "image_shape": list(split.image_shape),
                "class_counts": split.class_counts().tolist(),
            }
            for name, split in splits.items()
        },
    }
    if json_out:
        echo_json(report)
        return
    typer.echo(f"{dataset}: {report['source']} ({source.format})")
    typer.echo(f"  sha256 {report['source_sha256']}")
    typer.echo(f"  cache  {report['cache']}")
    for name, info in report["splits"].items():
        shape = "x".join(str(n) for n in info["image_shape"])
        typer.echo(f"  {name:<5}  {info['count']} images of {shape}")


@app.command("info")
def info_cmd(json_out: JsonOpt = False) -> None:
    """List the known datasets: classes, image shape, split sizes, official sources."""
    table: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "title": spec.title,
            "num_classes": spec.num_classes,
            "classes": list(spec.classes),
            "image_shape": list(spec.image_shape),
            "split_sizes": {"train": spec.split_sizes[0], "test": spec.split_sizes[1]},
            "formats": list(spec.formats),
            "downloads": [{"url": r.url, "md5": r.md5} for r in spec.downloads],
            "default_source": str(spec.default_source) if spec.default_source else None,
            "homepage": spec.homepage,
        }
        for spec in DATASETS.values()
    ]
    if json_out:
        echo_json(table)
        return
    for row in table:
        h, w, c = row["image_shape"]
        typer.echo(
            f"{row['name']:<14} {row['num_classes']:>3} classes  {h}x{w}x{c}  "
            f"train {row['split_sizes']['train']}  test {row['split_sizes']['test']}  "
            f"formats: {', '.join(row['formats'])}"
        )
        for remote in row["downloads"]:
            typer.echo(f"{'':<14} {remote['url']}  md5 {remote['md5']}")


@app.command("download")
def download_cmd(
    dataset: DatasetOpt = "cifar10",
    dest: Annotated[
        Path | None,
        typer.Option("--dest", help="folder to download into; default: data.dir"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Download a dataset's official release and verify its published MD5."""
    try:
        target = dest
        if target is None:
            target = load_settings(config).resolved_data().dir
        if target is None:
            fail("no destination: pass --dest DIR or set RKDSC_DATA_DIR")
            return
        path = download(dataset, target)
    except (DataSourceError, ValueError, OSError) as err:
        fail(str(err))
        return
    typer.echo(str(path))
