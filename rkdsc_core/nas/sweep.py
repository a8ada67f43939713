"""The lambda table: search at each lambda, then train every genotype the same way."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rkdsc_core.data import ImageDataset
from rkdsc_core.models.genotypes import genotype_to_dict
from rkdsc_core.nas.evaluate import StudentEvalConfig, data_key, evaluate_genotype
from rkdsc_core.nas.search import SearchConfig, search, search_inputs
from rkdsc_core.nas.teacher import Teacher
from rkdsc_core.train.ddp import DistInfo, barrier, current_dist

__all__ = ["format_table", "row_accuracy", "row_slug", "sweep", "sweep_rows", "write_table"]

log = logging.getLogger(__name__)

PLAIN_LABEL = "plain-darts"


def sweep_rows(
    cfg: SearchConfig, lambdas: Sequence[float], *, with_teacher: bool
) -> list[tuple[str, SearchConfig]]:
    """``(label, config)`` per table row: plain DARTS first, then one row per lambda.

    Plain DARTS is ``use_kd=False, lam=0``. The lambda rows use KD when there is a teacher;
    without one they are plain DARTS + lambda * cost, and ``lam=0`` is not repeated.
    """
    if any(not (math.isfinite(lam) and lam >= 0) for lam in lambdas):
        raise ValueError(f"lambdas must be finite and >= 0, got {list(lambdas)}")
    unique = list(dict.fromkeys(float(v) for v in lambdas))
    if len({f"{lam:g}" for lam in unique}) != len(unique):  # the labels below
        raise ValueError(f"lambdas {list(lambdas)} collide at 6 significant digits (labels)")
    rows = [(PLAIN_LABEL, dataclasses.replace(cfg, use_kd=False, lam=0.0))]
    for lam in unique:
        if not with_teacher and lam == 0.0:
            continue
        label = f"{'kdl-darts' if with_teacher else 'darts+cost'} lambda={lam:g}"
        rows.append((label, dataclasses.replace(cfg, use_kd=with_teacher, lam=lam)))
    return rows


def row_slug(label: str) -> str:
    """A row's folder name under the sweep's ``out_dir`` (``kdl-darts lambda=0.1`` ->
    ``kdl-darts_lambda-0.1``); ``make ship-nas`` names the committed files after it."""
    return label.replace(" ", "_").replace("=", "-")


def sweep(
    cfg: SearchConfig,
    lambdas: Sequence[float],
    train_data: ImageDataset,
    eval_data: ImageDataset,
    teacher: Teacher | None,
    out_dir: Path | str,
    *,
    eval_cfg: StudentEvalConfig | None = None,
    eval_seeds: int = 1,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
    dist: DistInfo | None = None,
    teacher_source: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Search once per row of :func:`sweep_rows`, then run the evaluation protocol on each.

    Each row gets ``out_dir/<slug>/``: a resumable search folder, one
    ``eval-seed{seed}.json`` per protocol seed (:func:`evaluate_genotype`) and, when done,
    ``genotype.json`` (as ``rkdsc nas search`` writes it) and ``row.json``; rows already
    done with the same configs, data, teacher (:func:`search_inputs`) and ``max_steps``
    are reused. A row's ``val_accuracy`` is the mean over the
    seeds (``val_accuracies``, ``val_accuracy_std`` give the spread); the search's and each
    protocol run's wall-clock seconds are kept (``search_wall_seconds``,
    ``eval_wall_seconds``). Writes ``out_dir/sweep.json`` and ``out_dir/sweep.md`` (see
    :func:`write_table`).

    Args:
        cfg: search settings shared by every row (``lam`` and ``use_kd`` are set per row).
        lambdas: the lambda values.
        train_data: searched on, and trains each genotype's student.
        eval_data: where ``val_accuracy`` is measured (e.g. the test split).
        teacher: teacher outputs for ``train_data`` (``None``: no KD rows).
        eval_cfg: the evaluation protocol (default :class:`StudentEvalConfig`).
        eval_seeds: protocol runs per genotype, seeds ``eval_cfg.seed`` upwards (the
            initialisation, training subset and batch order change; the test images do not).
        max_steps: per search and per evaluation training (tests).
        dist: the data-parallel job (default :func:`current_dist`): the searches and the
            protocol run on every rank; rank 0 writes.
        teacher_source: which teacher the KD rows distil from (``TeacherOutputs.source``),
            written into the table.

    Returns:
        the rows, as also written to ``sweep.json``.
    """
    info = dist if dist is not None else current_dist(device)
    ecfg = eval_cfg if eval_cfg is not None else StudentEvalConfig()
    if eval_seeds < 1:
        raise ValueError(f"eval_seeds must be >= 1, got {eval_seeds}")
    seeds = [ecfg.seed + i for i in range(eval_seeds)]
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    eval_key = data_key(eval_data)
    for label, row_cfg in sweep_rows(cfg, lambdas, with_teacher=teacher is not None):
        folder = out / row_slug(label)
        done = folder / "row.json"
        inputs = search_inputs(train_data, teacher if row_cfg.use_kd else None)
        if done.is_file():
            row = json.loads(done.read_text())
            if (
                row.get("search_config") == row_cfg.to_dict()
                and row.get("eval_config") == ecfg.to_dict()
                and row.get("eval_seeds") == seeds
                and row.get("inputs", inputs) == inputs  # older rows did not record them
                and row.get("eval_data", eval_key) == eval_key
                and row.get("max_steps") == max_steps
            ):
                log.info("%s: reusing %s", label, done)
                rows.append(row)
                continue
        result = search(
            row_cfg,
            train_data,
            teacher if row_cfg.use_kd else None,
            folder,
            device=device,
            max_steps=max_steps,
            dist=info,
        )
        evals = [
            evaluate_genotype(
                result.genotype,
                train_data,
                eval_data,
                dataclasses.replace(ecfg, seed=seed),
                folder,
                device=device,
                max_steps=max_steps,
                dist=info,
            )
            for seed in seeds
        ]
        accuracies = [e["val_accuracy"] for e in evals]
        last = result.history[-1] if result.history else {}
        row = {
            "label": label,
            "lambda": row_cfg.lam,
            "use_kd": row_cfg.use_kd,
            "cost": row_cfg.cost,
            "params": evals[0]["params"],
            "macs": evals[0]["macs"],
            "val_accuracy": statistics.fmean(accuracies),
            "val_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "val_accuracies": accuracies,
            "eval_seeds": seeds,
            "eval_images": evals[0]["eval_images"],
            "expected_cost": last.get("expected_cost"),
            "search_wall_seconds": last.get("wall_seconds"),
            "eval_wall_seconds": [e.get("wall_seconds") for e in evals],
            "genotype": genotype_to_dict(result.genotype),
            "search_config": row_cfg.to_dict(),
            "eval_config": ecfg.to_dict(),
            "inputs": inputs,
            "eval_data": eval_key,
            "max_steps": max_steps,
            "search_history": result.history,
            "eval_history": [e["history"] for e in evals],
        }
        if info.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            genotype_json = json.dumps(row["genotype"], indent=2) + "\n"
            (folder / "genotype.json").write_text(genotype_json)
            done.write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
    if info.is_main:
        write_table(
            rows,
            out,
            eval_cfg=ecfg,
            eval_split=f"{eval_data.name}/{eval_data.split}",
            teacher=teacher_source if teacher is not None else None,
        )
    barrier(info)
    return rows


def row_accuracy(row: dict[str, Any], unit: str = "seeds") -> str:
    """A row's accuracy: the mean, ``± sample std (n <unit>)`` when several runs count."""
    n = len(row.get("val_accuracies", [row["val_accuracy"]]))
    spread = f" ± {row['val_accuracy_std']:.4f} ({n} {unit})" if n > 1 else ""
    return f"{row['val_accuracy']:.4f}{spread}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The lambda table as Markdown: label, lambda, KD, params, MACs, accuracy, expected cost.

    The accuracy is :func:`row_accuracy`.
    """
    lines = [
        "| row | lambda | KD | params | MACs | val accuracy | expected cost |",
        "|---|---:|:---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cost = r.get("expected_cost")
        lines.append(
            f"| {r['label']} | {r['lambda']:g} | {'yes' if r['use_kd'] else 'no'} | "
            f"{r['params']:,} | {r['macs']:,} | {row_accuracy(r)} | "
            f"{'-' if cost is None else f'{cost:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def _teacher_line(teacher: dict[str, Any] | None) -> str:
    """One Markdown line naming the KD rows' teacher (empty without one)."""
    if not teacher:
        return ""
    acc = (teacher.get("metrics") or {}).get("test_accuracy")
    acc_text = "" if acc is None else f", clean test accuracy {acc:.4f}"
    sha = str(teacher.get("weights_sha256", ""))[:12]
    return (
        f"KD rows distil from `{teacher.get('model')}` (`{teacher.get('path')}`, weights "
        f"sha256 {sha}…{acc_text}), through the cache `{teacher.get('cache')}`.\n\n"
    )


def write_table(
    rows: Sequence[dict[str, Any]],
    out_dir: Path | str,
    *,
    eval_cfg: StudentEvalConfig,
    eval_split: str,
    teacher: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``sweep.json`` (rows without per-epoch histories) and ``sweep.md``.

    ``teacher`` (``TeacherOutputs.source``: the KD rows' teacher) goes into both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if not k.endswith("_history")} for r in rows]
    doc = {"kind": "kdl-darts-sweep", "eval_split": eval_split, "eval_config": eval_cfg.to_dict()}
    if teacher is not None:
        doc["teacher"] = teacher
    json_path = out / "sweep.json"
    json_path.write_text(json.dumps(doc | {"rows": slim}, indent=2) + "\n")
    md = (
        f"# KDL-DARTS lambda table\n\nEach genotype built as `darts-student` "
        f"(C={eval_cfg.C}, layers={eval_cfg.layers}) and trained with the same protocol "
        f"(cross-entropy, {eval_cfg.epochs} epochs); accuracy on {eval_split}"
        f" ({slim[0]['eval_images'] if slim else 0} images). Expected cost: the supernet's "
        f"normalised expected complexity at the end of the search.\n\n"
        + _teacher_line(teacher)
        + format_table(rows)
    )
    md_path = out / "sweep.md"
    md_path.write_text(md)
    return json_path, md_path
