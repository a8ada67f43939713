"""`rkdsc nas ...` commands: the KDL-DARTS architecture search and its lambda table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rkdsc_core.cli._common import (
    CacheOpt,
    CompileOpt,
    DataOpt,
    DatasetOpt,
    DeviceOpt,
    command_line,
    distributed,
    fail,
    genotype_arg,
    load_splits,
    run_settings,
)

if TYPE_CHECKING:
    from rkdsc_core.data import ImageDataset
    from rkdsc_core.nas import SearchConfig, StudentEvalConfig, TeacherOutputs
    from rkdsc_core.train.ddp import DistInfo

__all__ = ["app"]

app = typer.Typer(
    help="KDL-DARTS: architecture search with distillation and a complexity penalty.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, results).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML/JSON of SearchConfig fields (read first).")
]
CostOpt = Annotated[str | None, typer.Option("--cost", help="params | macs (default params).")]
KdOpt = Annotated[
    bool, typer.Option("--kd/--no-kd", help="Distil from --teacher-cache (--no-kd: plain DARTS).")
]
TeacherOpt = Annotated[
    Path | None,
    typer.Option(
        "--teacher-cache",
        help="Teacher-output cache of the training split (`rkdsc train cache-teacher`). "
        "Without it the KD terms are off.",
    ),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Search epochs (default 10).")]
SubsetOpt = Annotated[
    int | None, typer.Option("--subset", help="Training images searched on (default 10000).")
]
COpt = Annotated[int | None, typer.Option("--C", help="Supernet channels (default 8).")]
LayersOpt = Annotated[int | None, typer.Option("--layers", help="Supernet cells (default 5).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size (default 64).")]
SizeOpt = Annotated[
    int | None, typer.Option("--input-size", help="Search resolution in pixels (default 16).")
]
PcOpt = Annotated[
    int | None,
    typer.Option("--partial-channels", help="PC-DARTS K: 1/K channels per edge (default 4)."),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (default 0).")]
EvalEpochsOpt = Annotated[int | None, typer.Option(help="Protocol epochs (default 5).")]
EvalCOpt = Annotated[int | None, typer.Option("--eval-C", help="Student channels (default 16).")]
EvalLayersOpt = Annotated[int | None, typer.Option(help="Student cells (default 5).")]
EvalBatchOpt = Annotated[int | None, typer.Option(help="Protocol batch size (default 128).")]
EvalSubsetOpt = Annotated[
    int | None, typer.Option(help="Training images for the protocol (default 10000).")
]
EvalLimitOpt = Annotated[
    int | None, typer.Option(help="Test images for the accuracy (default 2000).")
]


def _search_config(config: Path | None, overrides: dict[str, Any]) -> SearchConfig:
    from rkdsc_core.nas import SearchConfig

    base: dict[str, Any] = {}
    if config is not None:
        text = config.read_text()
        if config.suffix in {".yaml", ".yml"}:
            import yaml

            base = yaml.safe_load(text) or {}
        else:
            base = json.loads(text)
        if not isinstance(base, dict):
            fail(f"{config} must hold a mapping of SearchConfig fields")
    try:
        return SearchConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))
    except (TypeError, ValueError) as e:
        fail(f"bad search config: {e}")
        raise


def _teacher(
    teacher_cache: Path | None, kd: bool, train: ImageDataset, info: DistInfo
) -> tuple[TeacherOutputs | None, str]:
    """The teacher (or ``None``) and one line saying which objective runs (rank 0 prints it)."""
    from rkdsc_core.nas import load_teacher_outputs

    teacher: TeacherOutputs | None = None
    if not kd:
        note = "--no-kd: plain DARTS objective (cross-entropy), no teacher"
    elif teacher_cache is None:
        note = "no --teacher-cache: the KD terms are off (cross-entropy + lambda * cost)"
    else:
        try:
            teacher = load_teacher_outputs(teacher_cache, train)
        except ValueError as e:
            fail(str(e))
            raise
        feat = "" if teacher.feature_dim is None else f" and features (D={teacher.feature_dim})"
        note = f"distilling from {teacher_cache}: logits{feat}"
    if info.is_main:
        typer.echo(note)
    return teacher, note


def _eval_config(
    seed: int,
    epochs: int | None,
    channels: int | None,
    layers: int | None,
    batch_size: int | None,
    train_subset: int | None,
    limit: int | None,
) -> StudentEvalConfig:
    """The evaluation protocol: the defaults, with the options given on the command line."""
    from rkdsc_core.nas import StudentEvalConfig

    overrides: dict[str, Any] = {
        "C": channels,
        "layers": layers,
        "epochs": epochs,
        "batch_size": batch_size,
        "train_subset": train_subset,
        "eval_images": limit,
    }
    return StudentEvalConfig(seed=seed, **{k: v for k, v in overrides.items() if v is not None})


@app.command("search")
def search_cmd(
    out: OutOpt,
    lam: Annotated[
        float | None, typer.Option("--lambda", help="Complexity weight (default 0.1).")
    ] = None,
    cost: CostOpt = None,
    kd: KdOpt = True,
    teacher_cache: TeacherOpt = None,
    epochs: EpochsOpt = None,
    subset: SubsetOpt = None,
    channels: COpt = None,
    layers: LayersOpt = None,
    batch_size: BatchOpt = None,
    input_size: SizeOpt = None,
    partial_channels: PcOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Search a cell; writes OUT/genotype.json and OUT/search.json (resumable)."""
    from rkdsc_core.models.genotypes import genotype_to_dict
    from rkdsc_core.nas import StudentEvalConfig, search, student_complexity

    settings = run_settings(data, cache_dir, device)
    with distributed(settings.device) as info:
        (train,) = load_splits(settings, dataset, ("train",), info)
        teacher, note = _teacher(teacher_cache, kd, train, info)
        overrides = {
            "lam": lam,
            "cost": cost,
            "epochs": epochs,
            "subset": subset,
            "C": channels,
            "layers": layers,
            "batch_size": batch_size,
            "input_size": input_size,
            "partial_channels": partial_channels,
            "seed": seed,
            "use_kd": teacher is not None,
        }
        cfg = _search_config(config, overrides)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        try:
            result = search(cfg, train, teacher, out, dist=info)
        except ValueError as e:
            fail(str(e))
            raise
        if not info.is_main:
            return
        genotype = genotype_to_dict(result.genotype)
        shape = StudentEvalConfig(C=cfg.C, layers=cfg.layers)
        derived = student_complexity(result.genotype, shape, len(train.classes))
        (out / "genotype.json").write_text(json.dumps(genotype, indent=2) + "\n")
        manifest = {
            "kind": "kdl-darts-search",
            "config": cfg.to_dict(),
            "objective": note,
            "genotype": genotype,
            "derived_student": {"C": cfg.C, "layers": cfg.layers} | derived,
            "alphas": {k: v.tolist() for k, v in result.alphas.items()},
            "history": result.history,
            "dataset": {"name": train.name, "split": train.split, "sha256": train.source_sha256},
            "teacher_cache": None if teacher is None else str(teacher_cache),
            "teacher": None if teacher is None else teacher.source,
            "device": str(info.device),
            "world_size": info.world_size,
            "command": command_line(),
        }
        (out / "search.json").write_text(json.dumps(manifest, indent=2) + "\n")
    expected = result.history[-1]["expected_cost"] if result.history else float("nan")
    typer.echo(
        f"wrote {out / 'genotype.json'}: {derived['params']:,} params at C={cfg.C}, "
        f"layers={cfg.layers}; expected {cfg.cost} cost {expected:.3f}"
    )


@app.command("sweep")
def sweep_cmd(
    out: OutOpt,
    lambdas: Annotated[
        str,
        typer.Option(
            "--lambdas",
            help="Comma-separated lambda values (default: the recipe's, as in "
            "scripts/reproduce.sh).",
        ),
    ] = "0,0.1,0.25",
    cost: CostOpt = None,
    kd: KdOpt = True,
    teacher_cache: TeacherOpt = None,
    epochs: EpochsOpt = None,
    subset: SubsetOpt = None,
    channels: COpt = None,
    layers: LayersOpt = None,
    batch_size: BatchOpt = None,
    input_size: SizeOpt = None,
    partial_channels: PcOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    eval_seeds: Annotated[
        int, typer.Option(help="Protocol runs per genotype (seeds --seed upwards); mean ± std.")
    ] = 1,
    eval_epochs: EvalEpochsOpt = None,
    eval_c: EvalCOpt = None,
    eval_layers: EvalLayersOpt = None,
    eval_batch_size: EvalBatchOpt = None,
    eval_train_subset: EvalSubsetOpt = None,
    eval_limit: EvalLimitOpt = None,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """The lambda table: search per lambda (plus plain DARTS), train each genotype alike."""
    from rkdsc_core.nas import format_table, sweep

    try:
        values = [float(v) for v in lambdas.split(",") if v.strip()]
    except ValueError:
        fail(f"--lambdas must be comma-separated numbers, got {lambdas!r}")
        raise
    settings = run_settings(data, cache_dir, device, compile_model)
    with distributed(settings.device, settings.compile) as info:
        train, test = load_splits(settings, dataset, ("train", "test"), info)
        teacher, _ = _teacher(teacher_cache, kd, train, info)
        overrides = {
            "cost": cost,
            "epochs": epochs,
            "subset": subset,
            "C": channels,
            "layers": layers,
            "batch_size": batch_size,
            "input_size": input_size,
            "partial_channels": partial_channels,
            "seed": seed,
        }
        cfg = _search_config(config, overrides)
        ecfg = _eval_config(
            cfg.seed,
            eval_epochs,
            eval_c,
            eval_layers,
            eval_batch_size,
            eval_train_subset,
            eval_limit,
        )
        try:
            rows = sweep(
                cfg,
                values,
                train,
                test,
                teacher,
                out,
                eval_cfg=ecfg,
                eval_seeds=eval_seeds,
                dist=info,
                teacher_source=None if teacher is None else teacher.source,
            )
        except ValueError as e:
            fail(str(e))
            raise
        if not info.is_main:
            return
    (out / "sweep-command.txt").write_text(command_line() + "\n")
    typer.echo(format_table(rows), nl=False)
    typer.echo(f"wrote {out / 'sweep.json'} and {out / 'sweep.md'}")


@app.command("evaluate")
def evaluate_cmd(
    genotype: Annotated[
        str,
        typer.Option(
            help="A reference name (darts_v2), a JSON object, or a JSON file holding a genotype "
            "(a search's genotype.json, a sweep row's row.json)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for eval-seed<SEED>.json; a sweep's row folder adds a seed to that row."
        ),
    ],
    seed: Annotated[int, typer.Option(help="Protocol seed (default 0).")] = 0,
    eval_epochs: EvalEpochsOpt = None,
    eval_c: EvalCOpt = None,
    eval_layers: EvalLayersOpt = None,
    eval_batch_size: EvalBatchOpt = None,
    eval_train_subset: EvalSubsetOpt = None,
    eval_limit: EvalLimitOpt = None,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """Train one genotype by the lambda table's evaluation protocol (one seed)."""
    from rkdsc_core.models.genotypes import genotype_from_dict, get_genotype
    from rkdsc_core.nas import evaluate_genotype

    arg = genotype_arg(genotype)
    try:
        geno = get_genotype(arg) if isinstance(arg, str) else genotype_from_dict(arg)
    except (KeyError, ValueError, TypeError) as e:
        fail(f"bad --genotype: {e}")
        raise
    ecfg = _eval_config(
        seed, eval_epochs, eval_c, eval_layers, eval_batch_size, eval_train_subset, eval_limit
    )
    settings = run_settings(data, cache_dir, device, compile_model)
    with distributed(settings.device, settings.compile) as info:
        train, test = load_splits(settings, dataset, ("train", "test"), info)
        result = evaluate_genotype(geno, train, test, ecfg, out, dist=info)
        if not info.is_main:
            return
    typer.echo(
        f"wrote {out / f'eval-seed{seed}.json'}: {result['params']:,} params, "
        f"{result['macs']:,} MACs, accuracy {result['val_accuracy']:.4f} "
        f"on {result['eval_images']} {test.split} images"
    )
