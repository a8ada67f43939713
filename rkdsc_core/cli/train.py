"""`rkdsc train ...` and `rkdsc eval ...` commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rkdsc_core.cli._common import (
    CacheOpt,
    CompileOpt,
    DataOpt,
    DatasetOpt,
    DeviceOpt,
    InputDatasetOpt,
    JsonOpt,
    command_line,
    distributed,
    echo_json,
    fail,
    genotype_arg,
    load_splits,
    run_settings,
)

if TYPE_CHECKING:
    from rkdsc_core.config import Settings
    from rkdsc_core.train.ddp import DistInfo

__all__ = ["eval_app", "train_app"]

train_app = typer.Typer(
    help="Training recipes (resumable; checkpoints every epoch).", no_args_is_help=True
)
eval_app = typer.Typer(help="Measure links.", no_args_is_help=True)


@train_app.command("link")
def train_link_cmd(
    out: Annotated[Path, typer.Option(help="Run folder: training state, logs, weights.")],
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 12).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 128).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    genotype: Annotated[
        str | None,
        typer.Option(help="Student genotype: a name, JSON or file (default: the student's)."),
    ] = None,
    c: Annotated[
        int | None, typer.Option("--c", help="Student's initial cell channels (default 16).")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Student's cells (default 5).")] = None,
    weights_out: Annotated[
        Path | None, typer.Option(help="Where to write the link bundle (default OUT/weights).")
    ] = None,
    eval_limit: Annotated[int, typer.Option(help="Test images for the eval table.")] = 1000,
    fp16: Annotated[bool, typer.Option(help="Store weights as float16.")] = True,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """End-to-end link training through the channel, cross-entropy only (no teacher).

    With --genotype (e.g. a search's genotype.json), --c and --layers as given to `rkdsc
    train student`, this is the cross-entropy-only baseline of the same student
    architecture that RKD distils.

    Runs under torchrun too (DDP; --batch-size is the global batch).
    """
    s = run_settings(data, cache_dir, device, compile_model)
    with distributed(s.device, s.compile) as info:
        geno = None if genotype is None else genotype_arg(genotype)
        student: dict[str, Any] = {"genotype": geno, "C": c, "layers": layers}
        _train_link(
            info, s, out, epochs, batch_size, seed, student, weights_out, eval_limit, fp16, dataset
        )


def _train_link(
    info: DistInfo,
    s: Settings,
    out: Path,
    epochs: int | None,
    batch_size: int | None,
    seed: int | None,
    student: dict[str, Any],
    weights_out: Path | None,
    eval_limit: int,
    fp16: bool,
    dataset: str,
) -> None:
    import dataclasses

    from rkdsc_core.link import save_link
    from rkdsc_core.train import LinkTrainConfig, train_link

    train, test = load_splits(s, dataset, ("train", "test"), info)
    overrides: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
    given = {k: v for k, v in student.items() if v is not None}  # genotype, C, layers
    if given:
        overrides["student_overrides"] = LinkTrainConfig().student_overrides | given
    cfg = dataclasses.replace(
        LinkTrainConfig(), **{k: v for k, v in overrides.items() if v is not None}
    )
    out.mkdir(parents=True, exist_ok=True)
    pipeline, summary = train_link(cfg, train, test, out, dist=info)
    if not info.is_main:
        return
    pipeline.cpu()
    dest = weights_out or out / "weights"
    save_link(
        dest,
        pipeline,
        student_name=cfg.student,
        classes=train.classes,
        fp16=fp16,
        meta={
            "recipe": "end-to-end cross-entropy through the channel (no teacher)",
            "dataset": {"name": train.name, "sha256": train.source_sha256},
            "training": summary,
        },
        metrics={"history": summary["history"]},
    )
    _measure_saved(dest, test, eval_limit, info.device)
    typer.echo(f"wrote {dest} (AWGN 20 dB accuracy {summary['history'][-1]['acc_awgn_20db']:.4f})")


def _measure_saved(dest: Path, test: Any, limit: int, device: Any) -> None:
    """Write ``dest/eval_table.json``, measured on ``device`` on the weights as saved
    (float16 when stored so), not on the in-memory float32 model."""
    from rkdsc_core.eval import measure_eval_table
    from rkdsc_core.link import load_link

    table = measure_eval_table(load_link(dest).pipeline.to(device), test, limit=limit)
    table.meta["command"] = command_line()
    table.save(dest / "eval_table.json")


@train_app.command("teacher")
def train_teacher_cmd(
    out: Annotated[Path, typer.Option(help="Run folder: training state, config, teacher.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Teacher: fastnet-cifar (default), resnet18-cifar-w32, resnet18-cifar, "
            "efficientnet-lite0, clip-vit-b32."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (preset: 20 FastNet, 30 ResNet).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (preset).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (one-cycle).")] = None,
    width: Annotated[
        int | None, typer.Option(help="ResNet width (32: the CPU teacher, 64: ResNet-18).")
    ] = None,
    widths: Annotated[
        str | None,
        typer.Option(
            help="FastNet's three conv-group widths [channels], comma-separated (preset "
            "64,320,320; the last is the feature width D)."
        ),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input size the model resizes to [pixels].")
    ] = None,
    clip_checkpoint: Annotated[
        Path | None,
        typer.Option(help="Local CLIP weights (open_clip or Hugging Face) for clip-vit-b32."),
    ] = None,
    freeze_backbone_epochs: Annotated[
        int | None, typer.Option(help="Epochs training the head only (>= epochs: linear probe).")
    ] = None,
    eval_images: Annotated[
        int | None, typer.Option(help="Test images per evaluation (default: all).")
    ] = None,
    cutout: Annotated[
        int | None, typer.Option(help="Cutout square side [pixels] (default 0: none).")
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            help="Per-step decay of a weight average that is evaluated and saved (default 0: none)."
        ),
    ] = None,
    lookahead: Annotated[
        bool | None,
        typer.Option(
            "--lookahead/--no-lookahead",
            help="Lookahead weight averaging on airbench's schedule (preset: off).",
        ),
    ] = None,
    crop_padding: Annotated[
        int | None, typer.Option(help="Training crop padding [pixels per side] (preset 4).")
    ] = None,
    pad_mode: Annotated[
        str | None, typer.Option(help="Crop padding: zeros (preset) or reflect.")
    ] = None,
    decay_biases: Annotated[
        bool | None,
        typer.Option(
            "--decay-biases/--no-decay-biases",
            help="Decay biases and norm shifts as much per step as weights (preset: no).",
        ),
    ] = None,
    stem_bias_epochs: Annotated[
        int | None,
        typer.Option(
            help="FastNet: train the whitening stem's bias like a weight for this many "
            "epochs, then freeze it (preset: an ordinary bias throughout)."
        ),
    ] = None,
    translate_tta: Annotated[
        bool | None,
        typer.Option(
            "--translate-tta/--no-translate-tta",
            help="Score with flip TTA plus one-pixel shifts (6 views; preset: flip only).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            help="Train a recorded recipe instead of the preset: a single teacher's "
            "training manifest (RUN/teacher.json, most of docs/results/teacher/*.json; "
            "not ensembles, nor manifests that record no recipe) or a run's config.json; "
            "the other flags change it."
        ),
    ] = None,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """Train or fine-tune the teacher; resumable (rerun the same command to resume).

    Writes OUT/state.* every epoch and OUT/teacher.{safetensors,json} at the end. Runs
    under torchrun too (DDP; --batch-size is the global batch).
    """
    from rkdsc_core.train.teacher import load_teacher_recipe, teacher_config

    recorded = None
    if recipe is not None:
        try:
            recorded = load_teacher_recipe(recipe)
        except ValueError as e:
            fail(str(e))
            raise
    name = model or (recorded["model"] if recorded else "fastnet-cifar")
    model_overrides: dict[str, Any] = {}
    if width is not None:
        if not name.startswith("resnet"):
            fail(f"--width applies to the ResNet teachers, not {name}")
        model_overrides["width"] = width
    if widths is not None:
        if not name.startswith("fastnet"):
            fail(f"--widths applies to the FastNet teachers, not {name}")
        try:
            model_overrides["widths"] = tuple(int(w) for w in widths.split(","))
        except ValueError:
            fail(f"--widths expects three comma-separated integers, got {widths!r}")
    if image_size is not None:
        model_overrides["image_size"] = image_size
    if clip_checkpoint is not None:
        if not name.startswith("clip"):
            fail(f"--clip-checkpoint applies to the CLIP teachers, not {name}")
        model_overrides["checkpoint"] = str(clip_checkpoint.expanduser().resolve())
    elif name == "clip-vit-b32" and "checkpoint" not in (recorded or {}).get("model_overrides", {}):
        fail("clip-vit-b32 needs --clip-checkpoint PATH (your local CLIP weights)")
    try:
        cfg = teacher_config(
            model,
            recipe=recorded,
            model_overrides=model_overrides or None,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            freeze_backbone_epochs=freeze_backbone_epochs,
            eval_images=eval_images,
            cutout=cutout,
            ema_decay=ema_decay,
            lookahead=lookahead,
            crop_padding=crop_padding,
            pad_mode=pad_mode,
            decay_biases=decay_biases,
            stem_bias_epochs=stem_bias_epochs,
            translate_tta=translate_tta,
            seed=seed,
        )
    except ValueError as e:
        fail(str(e))
        raise
    s = run_settings(data, cache_dir, device, compile_model)
    with distributed(s.device, s.compile) as info:
        _train_teacher(info, s, cfg, out, dataset)


def _train_teacher(info: DistInfo, s: Settings, cfg: Any, out: Path, dataset: str) -> None:
    import dataclasses

    from rkdsc_core.train.teacher import train_teacher

    train, test = load_splits(s, dataset, ("train", "test"), info)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {
            "command": command_line(),
            "dataset": {"name": train.name, "sha256": train.source_sha256},
            "device": str(info.device),
            "world_size": info.world_size,
            "teacher": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        }
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    try:
        _, summary = train_teacher(cfg, train, test, out, dist=info, command=command_line())
    except ValueError as e:
        fail(str(e))
        raise
    if info.is_main:
        acc = summary["test_accuracy"]
        typer.echo(
            f"wrote {summary['checkpoint']} (test accuracy {acc:.4f}, "
            f"{summary['wall_seconds'] / 60:.1f} min)"
        )


@train_app.command("cache-teacher")
def cache_teacher_cmd(
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint (e.g. RUN/teacher).")],
    out: Annotated[Path, typer.Option(help="Cache name: writes OUT.safetensors and OUT.json.")],
    views: Annotated[
        int | None, typer.Option(help="Views per image (default 4; view 0 un-augmented).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the views (default 0).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Teacher batch (default 256).")] = None,
    split: Annotated[str, typer.Option(help="Split to cache.")] = "train",
    dataset: InputDatasetOpt = None,
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Run the teacher once over every view of every image; store logits and features.

    Finished views are kept in OUT.partial/ until the cache is written: run the same
    command again to resume an interrupted run. Under torchrun only rank 0 computes; the
    other ranks leave at once rather than wait (a large teacher takes longer than the
    process group's timeout).
    """
    from rkdsc_core.checkpoint import checkpoint_paths
    from rkdsc_core.distill.cache import TeacherCacheError, build_teacher_cache

    manifest = checkpoint_paths(teacher)[1]
    try:
        teacher_doc = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"cannot read the teacher checkpoint {manifest}: {e}")
        raise
    trained_on = teacher_doc.get("dataset") or {}
    name = dataset or trained_on.get("name") or "cifar10"
    if split not in ("train", "test"):
        fail(f"--split must be train or test, got {split!r}")
    s = run_settings(data, cache_dir, device)
    with distributed(s.device) as info:
        (ds,) = load_splits(s, name, (split,), info)
        if trained_on.get("sha256") not in (None, ds.source_sha256) and info.is_main:
            sys.stderr.write(
                f"warning: the teacher was trained on source {trained_on['sha256'][:12]}..., "
                f"caching {ds.source_sha256[:12]}...\n"
            )
        try:
            path = build_teacher_cache(
                teacher,
                ds,
                out,
                views=4 if views is None else views,
                seed=0 if seed is None else seed,
                batch_size=256 if batch_size is None else batch_size,
                device=info.device,
                is_main=info.is_main,
            )
        except (TeacherCacheError, ValueError) as e:
            fail(str(e))
            raise
        if info.is_main:
            typer.echo(f"wrote {path}")


def _load_cache(info: DistInfo, s: Settings, teacher_cache: Path, dataset: str | None) -> Any:
    """``(train, test, cache)``: the cache's dataset (or ``dataset``) and the verified cache."""
    from rkdsc_core.checkpoint import checkpoint_paths
    from rkdsc_core.distill.cache import TeacherCacheError, load_teacher_cache

    manifest = checkpoint_paths(teacher_cache)[1]
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"cannot read the teacher cache manifest {manifest}: {e}")
        raise
    name = dataset or (doc.get("dataset") or {}).get("name") or "cifar10"
    train, test = load_splits(s, name, ("train", "test"), info)
    try:
        cache = load_teacher_cache(teacher_cache, dataset=train)
    except TeacherCacheError as e:
        fail(str(e))
        raise
    return train, test, cache


TeacherCacheOpt = Annotated[
    Path, typer.Option(help="Teacher cache (from `rkdsc train cache-teacher`), its name or .json.")
]


@train_app.command("student")
def train_student_cmd(
    teacher_cache: TeacherCacheOpt,
    out: Annotated[Path, typer.Option(help="Run folder: training state and OUT/student.")],
    genotype: Annotated[
        str | None, typer.Option(help="Genotype: a name (darts_v2), a JSON object or file.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 30).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (preset).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 3e-3).")] = None,
    c: Annotated[
        int | None, typer.Option("--c", help="Initial cell channels (default 16).")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Cells (default 5).")] = None,
    token_dim: Annotated[int | None, typer.Option(help="Token width D (default 128).")] = None,
    w_kd: Annotated[float | None, typer.Option(help="Weight of the logit KD term.")] = None,
    w_feat: Annotated[float | None, typer.Option(help="Weight of the feature term.")] = None,
    eval_images: Annotated[int | None, typer.Option(help="Test images per evaluation.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    dataset: InputDatasetOpt = None,
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """RKD stage 1: distil the cached teacher into the genotype's student (no channel).

    Resumable (rerun the same command); writes OUT/student.{safetensors,json}. Runs under
    torchrun too (DDP; --batch-size is the global batch).
    """
    import dataclasses

    from rkdsc_core.train.rkd import StudentKDConfig, train_student

    overrides: dict[str, Any] = {
        "genotype": None if genotype is None else genotype_arg(genotype),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "C": c,
        "layers": layers,
        "w_kd": w_kd,
        "w_feat": w_feat,
        "eval_images": eval_images,
        "seed": seed,
        "student_overrides": None if token_dim is None else {"token_dim": token_dim},
    }
    try:
        cfg = dataclasses.replace(
            StudentKDConfig(), **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValueError as e:
        fail(str(e))
        raise
    s = run_settings(data, cache_dir, device, compile_model)
    with distributed(s.device, s.compile) as info:
        train, test, cache = _load_cache(info, s, teacher_cache, dataset)
        out.mkdir(parents=True, exist_ok=True)
        try:
            _, summary = train_student(cfg, cache, train, test, out, dist=info)
        except ValueError as e:
            fail(str(e))
            raise
        if info.is_main:
            acc = summary["history"][-1]["test_accuracy"]
            typer.echo(f"wrote {summary['checkpoint']} (clean test accuracy {acc:.4f})")


@train_app.command("codec")
def train_codec_cmd(
    student: Annotated[Path, typer.Option(help="Stage-1 student checkpoint (RUN/student).")],
    teacher_cache: TeacherCacheOpt,
    out: Annotated[Path, typer.Option(help="Run folder: training state and weights.")],
    teacher_targets: Annotated[
        bool,
        typer.Option(
            help="Distil the teacher's targets (--no-teacher-targets: the stage1-only baseline)."
        ),
    ] = True,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 12).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (preset).")] = None,
    lr: Annotated[float | None, typer.Option(help="Codec peak learning rate (3e-3).")] = None,
    student_lr_scale: Annotated[
        float | None,
        typer.Option(help="Student lr = this x --lr (default 0.01; 0 freezes the student)."),
    ] = None,
    codec: Annotated[
        str | None, typer.Option(help="CAT overrides as JSON, e.g. '{\"d_model\": 64}'.")
    ] = None,
    w_ce: Annotated[float | None, typer.Option(help="Weight of cross-entropy (1).")] = None,
    w_kd: Annotated[
        float | None, typer.Option(help="Weight of the logit KD term (1; teacher targets).")
    ] = None,
    w_mse: Annotated[
        float | None,
        typer.Option(help="Weight of the MSE to the teacher's clean feature (1; teacher targets)."),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="KD temperature T (4).")] = None,
    eval_images: Annotated[int | None, typer.Option(help="Test images per evaluation.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    weights_out: Annotated[
        Path | None, typer.Option(help="Where to write the link bundle (default OUT/weights).")
    ] = None,
    eval_limit: Annotated[int, typer.Option(help="Test images for the eval table.")] = 1000,
    fp16: Annotated[bool, typer.Option(help="Store weights as float16.")] = True,
    dataset: InputDatasetOpt = None,
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    compile_model: CompileOpt = None,
) -> None:
    """RKD stage 2: train the CAT codec (student at a low lr) through the channel.

    Resumable; writes the link bundle with its eval table. Runs under torchrun too.
    """
    import dataclasses

    from rkdsc_core.train.rkd import CodecRKDConfig

    try:
        codec_overrides = None if codec is None else json.loads(codec)
    except json.JSONDecodeError as e:
        fail(f"--codec is not valid JSON: {e}")
        raise
    overrides: dict[str, Any] = {
        "teacher_targets": teacher_targets,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "student_lr_scale": student_lr_scale,
        "codec_overrides": codec_overrides,
        "w_ce": w_ce,
        "w_kd": w_kd,
        "w_mse": w_mse,
        "temperature": temperature,
        "eval_images": eval_images,
        "seed": seed,
    }
    try:
        cfg = dataclasses.replace(
            CodecRKDConfig(), **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValueError as e:
        fail(str(e))
        raise
    s = run_settings(data, cache_dir, device, compile_model)
    with distributed(s.device, s.compile) as info:
        _train_codec(
            info, s, cfg, student, teacher_cache, out, weights_out, eval_limit, fp16, dataset
        )


def _train_codec(
    info: DistInfo,
    s: Settings,
    cfg: Any,
    student: Path,
    teacher_cache: Path,
    out: Path,
    weights_out: Path | None,
    eval_limit: int,
    fp16: bool,
    dataset: str | None,
) -> None:
    from rkdsc_core.checkpoint import CheckpointError
    from rkdsc_core.train.rkd import train_codec

    train, test, cache = _load_cache(info, s, teacher_cache, dataset)
    out.mkdir(parents=True, exist_ok=True)
    dest = weights_out or out / "weights"
    try:
        _, summary = train_codec(
            cfg, student, cache, train, test, out, dist=info, weights_out=dest, fp16=fp16
        )
    except (ValueError, TypeError, CheckpointError) as e:
        fail(str(e))
        raise
    if not info.is_main:
        return
    _measure_saved(dest, test, eval_limit, info.device)
    acc = summary["history"][-1]["acc_awgn_20db"]
    typer.echo(f"wrote {dest} (AWGN 20 dB accuracy {acc:.4f})")


@eval_app.command("table")
def eval_table_cmd(
    weights: Annotated[
        Path | None, typer.Option(help="Link weights folder (default shipped).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Test images.")] = 1000,
    knowledge: Annotated[str, typer.Option(help="perfect | pilot | none")] = "pilot",
    out: Annotated[Path | None, typer.Option(help="Write the table JSON here.")] = None,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy per channel model, L and SNR (-10..24 dB) on the test split."""
    from rkdsc_core.channel import ChannelKnowledge
    from rkdsc_core.eval import measure_eval_table
    from rkdsc_core.link import load_link

    if knowledge not in {k.value for k in ChannelKnowledge}:
        fail(f"--knowledge must be perfect, pilot or none, got {knowledge!r}")
    s = run_settings(data, cache_dir, device)
    (test,) = load_splits(s, dataset, ("test",))
    bundle = load_link(weights)
    pipeline = _pipelines({"link": bundle}, test, s.device)["link"]
    table = measure_eval_table(pipeline, test, limit=limit, knowledge=knowledge)
    if out is not None:
        table.save(out)
    if as_json:
        echo_json(table.to_json())
        return
    for model, by_len in table.accuracy.items():
        typer.echo(
            f"{model}: accuracy by L (rows) and SNR [dB] (columns), {min(limit, len(test))} images"
        )
        typer.echo("   L " + " ".join(f"{s:5.0f}" for s in table.snr_db))
        for n, row in by_len.items():
            typer.echo(f"{n:4d} " + " ".join(f"{a:5.3f}" for a in row))


@eval_app.command("clean")
def eval_clean_cmd(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Model checkpoints (e.g. RUN/student, rkdsc_core/weights/teacher/teacher) or "
            "link weights folders (their student is scored)."
        ),
    ],
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="A fixed sample of this many test images (default all)."),
    ] = None,
    translate_tta: Annotated[
        bool,
        typer.Option(
            "--translate-tta",
            help="Also score six views: flip TTA plus one-pixel shifts (as airbench).",
        ),
    ] = False,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Clean test accuracy of classifiers, no channel: single view and with flip TTA."""
    from rkdsc_core.checkpoint import load_model
    from rkdsc_core.link import load_link
    from rkdsc_core.train.teacher import evaluate_teacher

    s = run_settings(data, cache_dir, device)
    (test,) = load_splits(s, dataset, ("test",))
    images = len(test) if limit is None else min(limit, len(test))
    rows = []
    for path in models:
        is_link = (path / "link.json").is_file()
        try:
            model = load_link(path).pipeline.student if is_link else load_model(path)
        except (FileNotFoundError, TypeError, ValueError) as e:  # CheckpointError included
            fail(f"cannot load {path}: {e}")
        acc = evaluate_teacher(model.to(s.device), test, limit=limit, translate_tta=translate_tta)
        row = {
            "path": str(path),
            "kind": "link student" if is_link else "checkpoint",
            "images": images,
            "accuracy_single_view": acc["test_accuracy_single_view"],
            "accuracy_flip_tta": acc.get("test_accuracy_flip_tta", acc["test_accuracy"]),
        }
        if translate_tta:
            row["accuracy_shift_tta"] = acc["test_accuracy"]
        rows.append(row)
    if as_json:
        echo_json(rows)
        return
    typer.echo(f"clean {dataset} test accuracy, {images} images")
    shifts = f" {'6 views':>9}" if translate_tta else ""
    typer.echo(f"{'single view':>11} {'flip TTA':>9}{shifts}  model")
    for r in rows:
        six = f" {r['accuracy_shift_tta']:9.4f}" if translate_tta else ""
        typer.echo(
            f"{r['accuracy_single_view']:11.4f} {r['accuracy_flip_tta']:9.4f}{six}  "
            f"{r['path']} ({r['kind']})"
        )


def _pipelines(bundles: dict[str, Any], data: Any, device: str) -> dict[str, Any]:
    """``{name: LinkBundle}`` -> ``{name: SemanticPipeline}`` on ``device``, each link's
    classes checked against ``data``'s (the same names in the same label order)."""
    for name, bundle in bundles.items():
        if tuple(bundle.classes) != tuple(data.classes):
            fail(
                f"link {name!r} ({bundle.weights_dir}) classifies {list(bundle.classes)}, not "
                f"{data.name}'s {list(data.classes)}"
            )
    return {name: bundle.pipeline.to(device) for name, bundle in bundles.items()}


def _load_links(specs: list[str]) -> dict[str, Any]:
    """``NAME=DIR`` options -> ``{name: LinkBundle}`` (an empty DIR: the shipped link)."""
    from rkdsc_core.link import load_link

    links = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name:
            fail(f"--weights expects NAME=DIR, got {spec!r}")
        if name in links:
            fail(f"--weights: the name {name!r} is given twice")
        try:
            links[name] = load_link(Path(folder) if folder else None)
        except (FileNotFoundError, TypeError, ValueError) as e:  # CheckpointError included
            fail(str(e))
            raise
    return links


@eval_app.command("sweep")
def eval_sweep_cmd(
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=DIR, repeatable; the first is the digital reference (its student "
            "head must classify clean tokens: a stage-1 student, not a CE-only link)."
        ),
    ] = None,
    channel: Annotated[list[str] | None, typer.Option(help="awgn | rayleigh, repeatable.")] = None,
    knowledge: Annotated[
        list[str] | None,
        typer.Option(help="perfect | pilot | none, repeatable (default perfect and pilot)."),
    ] = None,
    snr_db: Annotated[
        list[float] | None, typer.Option("--snr-db", help="SNR [dB], repeatable (-10..24).")
    ] = None,
    length: Annotated[
        list[int] | None, typer.Option(help="L, repeatable (default each link's lengths).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Test images (a seeded sample).")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Image sample and channel noise seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write sweep.csv, sweep.json and plots here.")
    ] = None,
    no_digital: Annotated[
        bool, typer.Option("--no-digital", help="Skip the digital baselines.")
    ] = False,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Measure only the links given (systems already in the sweep in --out) and "
            "swap their rows in, keeping every other system's; give the sweep's own points "
            "and sample options (a mismatch is refused before measuring). The digital "
            "baselines are not remeasured.",
        ),
    ] = False,
    digital_bits: Annotated[int, typer.Option(help="Bits per feature value (digital).")] = 8,
    pca_images: Annotated[
        int,
        typer.Option(
            help="Training images that fit the transform-coded digital baseline "
            "(digital-pca); 0 leaves it out."
        ),
    ] = 2000,
    pca_bits: Annotated[int, typer.Option(help="Bits per PCA coefficient (digital-pca).")] = 4,
    dataset: DatasetOpt = "cifar10",
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Links and digital baselines: accuracy per channel, CSI, L and SNR on the test split."""
    from dataclasses import asdict

    from rkdsc_core.checkpoint import git_commit, machine_info
    from rkdsc_core.eval import (
        DEFAULT_SNRS,
        check_sweep,
        check_update,
        measure_sweep,
        read_sweep,
        replace_systems,
        write_sweep,
    )

    if update and (out is None or not weights):
        fail("--update needs --out (the sweep to update) and --weights (the links to remeasure)")
    previous = None
    if update:
        try:
            previous = read_sweep(out)  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail(f"--update: {out}: {e}")
            raise
        no_digital = True
    if pca_images < 0:
        fail(f"--pca-images must be >= 0 (0 leaves digital-pca out), got {pca_images}")
    bundles = _load_links(weights or ["default="])
    s = run_settings(data, cache_dir, device)
    with_pca = pca_images > 0 and not no_digital
    *fit, test = load_splits(s, dataset, ("train", "test") if with_pca else ("test",))
    links = _pipelines(bundles, test, s.device)
    points: dict[str, Any] = {
        "channels": channel or ("awgn", "rayleigh"),
        "knowledge": knowledge or ("perfect", "pilot"),
        "snr_db": DEFAULT_SNRS if snr_db is None else snr_db,
        "lengths": length,
        "limit": limit,
        "digital": not no_digital,
        "digital_bits": digital_bits,
        "pca_bits": pca_bits,
    }
    try:
        check_sweep(links, **points)
        if previous is not None:  # refuse a mismatch before minutes of measuring
            if previous[1].get("source_sha256") not in (None, test.source_sha256):
                raise ValueError(f"{out} was measured on other data than {test.source_sha256}")
            if previous[1].get("source_sha256") is None:
                typer.echo(
                    f"warning: {out}/sweep.json does not record its data's sha256, so the "
                    "data cannot be checked against it; be sure it is the same",
                    err=True,
                )
            check_update(
                previous[0], links, images=min(limit, len(test)), seed=seed,
                channels=points["channels"], knowledge=points["knowledge"],
                snr_db=points["snr_db"], lengths=length,
            )  # fmt: skip
    except ValueError as e:
        fail(f"--update: {e}" if previous is not None else str(e))
        raise
    start = time.monotonic()
    rows = measure_sweep(
        links, test, seed=seed, pca_fit=fit[0] if fit else None, pca_images=pca_images, **points
    )
    meta: dict[str, Any] = {"dataset": test.name, "split": test.split}
    meta |= {"source_sha256": test.source_sha256}
    meta |= {"links": {n: str(w) for n, w in (x.partition("=")[::2] for x in weights or [])}}
    meta |= {"command": command_line(), "git_commit": git_commit()}
    meta |= {"wall_seconds": round(time.monotonic() - start, 1), "machine": machine_info()}
    meta |= {"device": s.device}
    if previous is not None:
        old_rows, old_meta = previous
        rows = replace_systems(old_rows, rows)
        provenance = ("command", "git_commit", "links", "wall_seconds", "machine", "device")
        entry = {k: meta[k] for k in provenance}
        updates = [*old_meta.get("updates", []), entry]
        meta = old_meta | {"links": old_meta.get("links", {}) | meta["links"], "updates": updates}
    written = [] if out is None else write_sweep(rows, out, meta=meta)
    if as_json:
        echo_json({"meta": meta, "rows": [asdict(r) for r in rows]})
        return
    for r in rows:
        typer.echo(
            f"{r.system:>20} {r.channel:>8} {r.knowledge:>7} L={r.L:<4d} {r.snr_db:6.1f} dB "
            f"acc={r.accuracy:.3f} uses={r.channel_uses}"
        )
    if out is not None:
        typer.echo(f"wrote {out}/" + ", ".join(p.name for p in written))


@eval_app.command("feature-gap")
def eval_feature_gap_cmd(
    weights: Annotated[list[str], typer.Option(help="NAME=DIR of a link, repeatable.")],
    teacher_cache: TeacherCacheOpt,
    projector: Annotated[
        Path, typer.Option(help="The measuring stick: stage 1's projector (RUN/student/projector).")
    ],
    channel: Annotated[list[str] | None, typer.Option(help="awgn | rayleigh, repeatable.")] = None,
    snr_db: Annotated[
        list[float] | None, typer.Option("--snr-db", help="SNR [dB], repeatable (-5, 0, 5, 20).")
    ] = None,
    length: Annotated[int, typer.Option(help="Symbols L per image.")] = 64,
    knowledge: Annotated[str, typer.Option(help="perfect | pilot CSI.")] = "pilot",
    limit: Annotated[
        int, typer.Option(help="N training images: a seeded sample (sources are class-sorted).")
    ] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the image sample and the noise.")] = 0,
    data: DataOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How far each link's received feature lies from the teacher's clean one (no labels).

    The gap is the distillation's feature loss (MSE of L2-normalised features, in [0, 4])
    between the projected pooled feature the receiver decodes and the cached teacher
    feature of the same training image, clean (the student alone) and per channel and SNR,
    on a seeded sample of the training split.
    """
    from dataclasses import asdict

    import torch

    from rkdsc_core.checkpoint import CheckpointError, load_checkpoint
    from rkdsc_core.data import to_tensor
    from rkdsc_core.distill import FeatureProjector
    from rkdsc_core.eval.feature_gap import feature_gap
    from rkdsc_core.train.ddp import DistInfo

    if limit < 1:
        fail(f"--limit must be >= 1, got {limit}")
    bundles = _load_links(weights)
    try:
        state, doc = load_checkpoint(projector)
        stick = FeatureProjector(**doc["config"])
        stick.load_state_dict(state)
    except (CheckpointError, KeyError, TypeError, RuntimeError) as e:
        fail(f"cannot load the projector {projector}: {e}")
        raise
    s = run_settings(data, cache_dir, device)
    train, _, cache = _load_cache(DistInfo.single(), s, teacher_cache, None)
    links = _pipelines(bundles, train, s.device)
    idx = train.sample_indices(limit, seed=seed)  # view 0 of the cache: the images as they are
    images = to_tensor(train.images[idx])
    try:
        rows = feature_gap(
            links, stick, images, cache.features[0, torch.from_numpy(idx)].float(),
            channels=channel or ("awgn", "rayleigh"),
            snr_db=snr_db or (-5.0, 0.0, 5.0, 20.0),
            length=length, knowledge=knowledge, seed=seed,
        )  # fmt: skip
    except (ValueError, RuntimeError) as e:
        fail(str(e))
        raise
    if as_json:
        echo_json({"images": len(idx), "rows": [asdict(r) for r in rows]})
        return
    typer.echo(
        f"feature gap to the teacher (2 - 2 cos), {len(idx)} training images (seed {seed}), "
        f"L={length}"
    )
    for r in rows:
        snr = "" if r.snr_db is None else f"{r.snr_db:6.1f} dB"
        typer.echo(f"{r.link:>16} {r.channel:>8} {snr:>9}  {r.gap:.4f}")


@eval_app.command("compare")
def eval_compare_cmd(
    sweep: Annotated[Path, typer.Option(help="An `rkdsc eval sweep --out` folder (sweep.json).")],
    length: Annotated[int, typer.Option(help="L, the complex symbols per image.")] = 64,
    knowledge: Annotated[str, typer.Option(help="perfect | pilot.")] = "pilot",
    snr_db: Annotated[
        list[float] | None, typer.Option(help="SNR columns, repeatable (default all).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the Markdown here.")] = None,
) -> None:
    """A sweep's systems side by side at one L: a Markdown table per channel (no re-measuring)."""
    from rkdsc_core.eval import format_sweep, read_sweep

    try:
        rows, _ = read_sweep(sweep)
        table = format_sweep(rows, length=length, knowledge=knowledge, snr_db=snr_db)
    except (OSError, KeyError, TypeError, ValueError) as e:
        fail(f"{sweep}: {e}")
        raise
    if out is not None:
        out.write_text(table)
    typer.echo(table, nl=False)


@eval_app.command("plot")
def eval_plot_cmd(
    sweep: Annotated[Path, typer.Option(help="An `rkdsc eval sweep --out` folder (sweep.json).")],
) -> None:
    """Draw a sweep's plots again from its sweep.json (no re-measuring), into its folder."""
    from rkdsc_core.eval import plot_sweep, read_sweep

    try:
        rows, _ = read_sweep(sweep)
    except (OSError, KeyError, TypeError, ValueError) as e:
        fail(f"{sweep}: {e}")
        raise
    if not rows:
        fail(f"{sweep}: the sweep has no rows")
    for path in plot_sweep(rows, sweep):
        typer.echo(f"wrote {path}")


@eval_app.command("margins")
def eval_margins_cmd(
    sweep: Annotated[Path, typer.Option(help="An `rkdsc eval sweep --out` folder (sweep.json).")],
    against: Annotated[list[str], typer.Option(help="The systems compared with, repeatable.")],
    system: Annotated[str, typer.Option(help="The system whose lead is measured.")] = "rkd",
    knowledge: Annotated[
        list[str] | None,
        typer.Option(help="perfect | pilot | none, repeatable (default perfect and pilot)."),
    ] = None,
    length: Annotated[list[int] | None, typer.Option(help="L, repeatable (default all).")] = None,
    max_snr_db: Annotated[
        float | None, typer.Option(help="Only the points at or below this SNR [dB].")
    ] = None,
    alpha: Annotated[float, typer.Option(help="McNemar significance level per point.")] = 0.05,
    as_json: JsonOpt = False,
) -> None:
    """How far one system leads others over a sweep's points, per channel and in all
    (accuracy points; paired McNemar tests on the same images; nothing re-measured)."""
    from dataclasses import asdict

    from rkdsc_core.eval import margins, read_sweep

    table = []
    try:
        rows, _ = read_sweep(sweep)
        for base in against:
            for channel in [*dict.fromkeys(r.channel for r in rows), "all"]:
                m = margins(
                    rows, system, base, channels=None if channel == "all" else [channel],
                    knowledge=knowledge, lengths=length, max_snr_db=max_snr_db, alpha=alpha,
                )  # fmt: skip
                table.append({"against": base, "channel": channel} | asdict(m))
    except (OSError, KeyError, TypeError, ValueError) as e:
        fail(f"{sweep}: {e}")
        raise
    if as_json:
        echo_json(table)
        return
    typer.echo(
        f"{system} minus each system, accuracy points ({', '.join(knowledge or ['both'])} CSI, "
        f"L {', '.join(map(str, length)) if length else 'all'}, "
        f"SNR {'<= ' + format(max_snr_db, 'g') + ' dB' if max_snr_db is not None else 'all'}):\n"
    )
    typer.echo(
        "| vs | channel | points | min | max | mean | ahead / level / behind "
        f"| McNemar better / worse (p < {alpha:g}) | after Bonferroni |"
    )
    typer.echo("|---|---|---:|---:|---:|---:|---|---|---|")
    for t in table:
        n, k = t["points"], t["recorded"]
        tested = f" ({k} of {n} points have records)" if k < n else ""
        mcnemar, corrected = "no records", "no records"
        if k:
            mcnemar = f"{t['better']} / {t['worse']}{tested}"
            corrected = f"{t['better_corrected']} / {t['worse_corrected']} (p < {alpha / k:.2g})"
        typer.echo(
            f"| {t['against']} | {t['channel']} | {n} | {t['low']:+.1f} | {t['high']:+.1f} "
            f"| {t['mean']:+.2f} | {t['ahead']} / {t['level']} / {t['behind']} "
            f"| {mcnemar} | {corrected} |"
        )


@eval_app.command("targets")
def eval_targets_cmd(
    sweep: Annotated[Path, typer.Option(help="An `rkdsc eval sweep --out` folder (sweep.json).")],
    teacher: Annotated[
        Path,
        typer.Option(
            help="The teacher checkpoint or its manifest (only the manifest is read: the "
            "clean accuracy and parameter count; the weights need not be here)."
        ),
    ],
    link: Annotated[Path, typer.Option(help="The RKD link weights (student + CAT encoder).")],
    nas: Annotated[
        list[Path] | None,
        typer.Option(
            help="An `rkdsc nas sweep --out` folder (the lambda table); repeat it for sweeps "
            "at other search seeds, which are pooled."
        ),
    ] = None,
    rkd: Annotated[str, typer.Option(help="The RKD link's name in the sweep.")] = "rkd",
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="Systems RKD must beat up to 5 dB (default stage1-only, ce-only)."),
    ] = None,
    knowledge: Annotated[str, typer.Option(help="CSI the targets are read at.")] = "pilot",
    nas_lambda: Annotated[float, typer.Option(help="The KDL-DARTS row compared.")] = 0.1,
    out: Annotated[Path | None, typer.Option(help="Also write the Markdown table here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The paper's targets, checked from the recipe's results (nothing is re-measured)."""
    from dataclasses import asdict

    from rkdsc_core.checkpoint import CheckpointError, checkpoint_paths
    from rkdsc_core.eval import check_targets, format_targets, read_sweep
    from rkdsc_core.link import load_link
    from rkdsc_core.models import count_parameters

    try:
        rows, _ = read_sweep(sweep)
        manifest = json.loads(checkpoint_paths(teacher)[1].read_text())
        teacher_params = int(manifest["parameters"])
        pipeline = load_link(link).pipeline
        nas_rows = []
        for d in nas or ():
            table = json.loads((d / "sweep.json").read_text())
            source = {
                "teacher_sha256": (table.get("teacher") or {}).get("weights_sha256"),
                "eval_split": table.get("eval_split"),
            }
            nas_rows += [r | source for r in table["rows"]]
    except (OSError, KeyError, TypeError, ValueError, CheckpointError) as e:
        fail(f"cannot read the results: {e}")
        raise
    # The links are scored on one view of each image: so is the teacher's accuracy here, of
    # the weights as shipped (float16) where the manifest has it, else at the end of training.
    metrics = manifest.get("metrics", {})
    accuracy = (metrics.get("shipped") or {}).get(
        "test_accuracy_single_view", metrics.get("test_accuracy_single_view")
    )
    if accuracy is None:
        fail(
            f"{teacher}: its manifest has no single-view accuracy "
            "(metrics.test_accuracy_single_view); the links are scored on one view"
        )
    try:
        checks = check_targets(
            rows,
            teacher_accuracy=float(accuracy),
            teacher_params=teacher_params,
            encoder_params=count_parameters(pipeline.student)
            + count_parameters(pipeline.codec.encoder),
            rkd=rkd,
            baselines=tuple(baseline or ("stage1-only", "ce-only")),
            knowledge=knowledge,
            nas_rows=nas_rows,
            nas_lambda=nas_lambda,
            teacher_test_accuracy=(metrics.get("shipped") or metrics).get("test_accuracy"),
            teacher_views="flip TTA" if metrics.get("flip_tta") else "single view",
        )
    except ValueError as e:
        fail(f"cannot check the targets: {e}")
        raise
    table = format_targets(checks)
    if out is not None:
        out.write_text(table)
    if as_json:
        echo_json([asdict(c) for c in checks])
    else:
        typer.echo(table, nl=False)
