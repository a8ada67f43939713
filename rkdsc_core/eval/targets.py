"""The paper's targets, checked from the files the recipe writes (``rkdsc eval targets``).

Inputs are results on disk, never re-measured here: the ``rkdsc eval sweep`` rows, the
teacher's checkpoint manifest (its clean test accuracy), the RKD link (its parameters) and,
optionally, the KDL-DARTS lambda table (``rkdsc nas sweep``'s ``sweep.json``). Each target
becomes a :class:`TargetCheck` with the measured value, the threshold and whether it is met;
a target whose inputs are missing is reported as not measured, never as met.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rkdsc_core.eval.sweep import SweepRow, margins
from rkdsc_core.eval.table import DEFAULT_SNRS
from rkdsc_core.nas.sweep import row_accuracy

__all__ = ["TargetCheck", "check_targets", "format_targets"]


@dataclass(frozen=True)
class TargetCheck:
    """One target: what was measured against what is asked.

    Attributes:
        name: the target, in words.
        value: the measured figure (``None``: not measured).
        threshold: what it must reach, in words (``>= 0.95``).
        met: ``None`` when not measured.
        detail: the numbers behind ``value``.
    """

    name: str
    value: float | None
    threshold: str
    met: bool | None
    detail: str


def _row(
    rows: Iterable[SweepRow], system: str, channel: str, knowledge: str, snr_db: float, length: int
) -> SweepRow | None:
    for r in rows:
        if (r.system, r.channel, r.knowledge, r.L) == (system, channel, knowledge, length) and (
            math.isclose(r.snr_db, snr_db, abs_tol=1e-6)
        ):
            return r
    return None


def _acc(
    rows: Iterable[SweepRow], system: str, channel: str, knowledge: str, snr_db: float, length: int
) -> float | None:
    row = _row(rows, system, channel, knowledge, snr_db, length)
    return None if row is None else row.accuracy


def _paired_summary(
    rows: Sequence[SweepRow],
    rkd: str,
    baselines: Sequence[str],
    points: dict[str, Any],
    alpha: float = 0.05,
) -> str:
    """``; significant ...: vs B better at x, worse at y of n SNRs`` per baseline ``B``
    (:func:`margins` at ``points``). A baseline is left out when its per-image records are
    missing or bad; nothing when all are.
    """
    parts = []
    for base in baselines:
        try:
            m = margins(rows, rkd, base, alpha=alpha, **points)
        except ValueError:
            continue
        if m.recorded == m.points:
            parts.append(f"vs {base} better at {m.better}, worse at {m.worse} of {m.points} SNRs")
    if not parts:
        return ""
    return f"; significant on the same images (McNemar, p < {alpha:g} each): {'; '.join(parts)}"


def _missing(name: str, threshold: str, why: str) -> TargetCheck:
    return TargetCheck(name, None, threshold, None, f"not measured: {why}")


def check_targets(
    rows: Sequence[SweepRow],
    *,
    teacher_accuracy: float,
    teacher_params: int,
    encoder_params: int,
    rkd: str = "rkd",
    baselines: Sequence[str] = ("stage1-only", "ce-only"),
    knowledge: str = "pilot",
    nas_rows: Sequence[dict[str, Any]] | None = None,
    nas_lambda: float = 0.1,
    teacher_test_accuracy: float | None = None,
    teacher_views: str = "flip TTA",
) -> list[TargetCheck]:
    """Check the targets of the training issue.

    Args:
        rows: ``rkdsc eval sweep`` rows; the RKD link is ``rkd``, read at its largest L, and
            the baselines at the same L.
        teacher_accuracy: the teacher's clean test accuracy, in (0, 1] (single view, as
            the links are scored): the 20 dB target's denominator.
        teacher_test_accuracy: the teacher's test accuracy as its manifest reports it
            (``teacher_views``, flip TTA for the zoo's recipes): checked against 92%, and
            shown beside the 20 dB ratio; ``None``: not measured.
        teacher_params: the teacher's parameters, > 0.
        encoder_params: the student's plus the CAT encoder's parameters (what transmits).
        baselines: the systems RKD must beat at every SNR up to 5 dB: every point of the
            sweep's grid there (-10 to 4 dB in 2 dB steps) must be measured.
        knowledge: the receiver's channel knowledge the accuracy targets are read at.
        nas_rows: ``rkdsc nas sweep`` rows (``label``, ``lambda``, ``use_kd``, ``params``,
            ``val_accuracy``, and ``teacher_sha256`` and ``eval_split`` from their table);
            the plain DARTS row has ``use_kd`` false and lambda 0. The rows of several tables
            (sweeps at different search seeds, the same teacher, test split and budget
            otherwise) are pooled: the size is the ratio of the cells' mean parameters and
            the accuracy the mean over every protocol run of every search.
        nas_lambda: the KDL-DARTS row compared with plain DARTS.

    Raises:
        ValueError: ``teacher_accuracy`` or ``teacher_params`` out of range, or lambda
            tables that cannot be pooled (a search seed twice, different teachers, test
            splits or budgets, or plain DARTS and the KDL-DARTS row from different searches).
    """
    if not 0.0 < teacher_accuracy <= 1.0 or teacher_params < 1:
        raise ValueError(
            f"need a teacher accuracy in (0, 1] and > 0 parameters, got {teacher_accuracy} "
            f"and {teacher_params}"
        )
    name = f"teacher's clean test accuracy ({teacher_views})"
    if teacher_test_accuracy is None:
        checks = [_missing(name, ">= 0.92", "the teacher's manifest reports no test accuracy")]
    else:
        met = teacher_test_accuracy >= 0.92
        checks = [TargetCheck(name, teacher_test_accuracy, ">= 0.92", met, "its manifest")]
    checks.append(
        TargetCheck(
            "student + CAT encoder size vs the teacher",
            encoder_params / teacher_params,
            "<= 0.10",
            encoder_params / teacher_params <= 0.10,
            f"{encoder_params:,} / {teacher_params:,} parameters",
        )
    )
    mine = [r for r in rows if r.system == rkd]
    length = max((r.L for r in mine), default=0)
    at20 = _acc(mine, rkd, "awgn", knowledge, 20.0, length)
    at0 = _acc(mine, rkd, "awgn", knowledge, 0.0, length)
    name = f"AWGN 20 dB ({knowledge} CSI, L={length}) vs the teacher's clean accuracy (single view)"
    if at20 is None:
        checks.append(_missing(name, ">= 0.95 (aim 0.98)", f"no {rkd} row at AWGN 20 dB"))
    else:
        ratio = at20 / teacher_accuracy
        detail = f"{at20:.4f} / {teacher_accuracy:.4f}"
        if teacher_test_accuracy is not None and teacher_test_accuracy != teacher_accuracy:
            other = at20 / teacher_test_accuracy
            below = ", below 0.95" if other < 0.95 else ""
            detail += (
                f" (with the teacher's {teacher_views} {teacher_test_accuracy:.4f}: "
                f"{other:.4f}{below})"
            )
        checks.append(TargetCheck(name, ratio, ">= 0.95 (aim 0.98)", ratio >= 0.95, detail))
    name = f"AWGN 0 dB vs 20 dB ({knowledge} CSI, L={length})"
    if at0 is None or at20 is None:
        checks.append(_missing(name, ">= 0.90", f"no {rkd} row at AWGN 0 or 20 dB"))
    elif at20 == 0:
        checks.append(TargetCheck(name, 0.0, ">= 0.90", False, "accuracy 0 at 20 dB"))
    else:
        ratio = at0 / at20
        checks.append(TargetCheck(name, ratio, ">= 0.90", ratio >= 0.90, f"{at0:.4f} / {at20:.4f}"))
    grid = [s for s in DEFAULT_SNRS if s <= 5.0]  # the sweep's grid: -10 to 4 dB
    for channel in ("awgn", "rayleigh"):
        measured = {r.snr_db for r in mine if r.channel == channel and r.snr_db <= 5.0}
        snrs = sorted(measured | set(grid))  # every grid point must be there to say "every"
        name = f"beats {' and '.join(baselines)} at every SNR <= 5 dB, {channel}"
        leads, missing = [], []
        for snr in snrs:
            ours = _row(mine, rkd, channel, knowledge, snr, length)
            if ours is None:
                missing.append(f"{rkd}@{snr:g} dB, L={length}")
                continue
            for base in baselines:
                theirs = _row(rows, base, channel, knowledge, snr, length)
                if theirs is None:
                    missing.append(f"{base}@{snr:g} dB, L={length}")
                    continue
                leads.append((ours.accuracy - theirs.accuracy, base, snr))
        if missing:
            why = f"missing {', '.join(missing)}"
            checks.append(_missing(name, "> 0 at every SNR", why))
            continue
        worst = min(leads)
        detail = f"smallest margin {worst[0]:+.4f} (vs {worst[1]} at {worst[2]:g} dB, L={length})"
        points = {"channels": [channel], "knowledge": [knowledge], "lengths": [length]}
        detail += _paired_summary(rows, rkd, baselines, points | {"max_snr_db": 5.0})
        checks.append(TargetCheck(name, worst[0], "> 0 at every SNR", worst[0] > 0, detail))
    checks.extend(_nas_checks(nas_rows, nas_lambda))
    return checks


def _search_seed(row: dict[str, Any]) -> Any:
    return (row.get("search_config") or {}).get("seed")


def _budget(row: dict[str, Any], *ignore: str) -> list[dict[str, Any]]:
    """A λ-table row's search and protocol configs, less the ``ignore``d keys."""
    return [
        {k: v for k, v in (row.get(key) or {}).items() if k not in ignore}
        for key in ("search_config", "eval_config")
    ]


def _pool(rows: Sequence[dict[str, Any]], what: str) -> dict[str, Any]:
    """One lambda-table row from the same row of several searches (search seeds).

    ``params`` is the mean over the searches' cells and every protocol run is pooled:
    ``val_accuracy`` is their mean, ``val_accuracy_std`` their sample std. One row is
    returned as it is.

    Raises:
        ValueError: two rows of the same search seed, or rows whose search or protocol
            settings differ other than in the seed (not the same budget).
    """
    if len(rows) == 1:
        return dict(rows[0])
    sources = {(r.get("teacher_sha256"), r.get("eval_split")) for r in rows}
    if len(sources) > 1:
        raise ValueError(
            f"{what}: the tables come from different teachers or test splits "
            f"(teacher sha256, split: {sorted(sources, key=repr)}); not the same budget"
        )
    seeds = [_search_seed(r) for r in rows]
    if None in seeds or len(set(seeds)) < len(seeds):
        raise ValueError(f"{what}: pooling needs one row per search seed, got seeds {seeds}")
    if any(_budget(r, "seed") != _budget(rows[0], "seed") for r in rows[1:]):
        raise ValueError(f"{what}: the tables differ in more than the seed; not the same budget")
    runs = [a for r in rows for a in r.get("val_accuracies", [r["val_accuracy"]])]
    return {
        "params": statistics.fmean(r["params"] for r in rows),
        "cells": [r["params"] for r in rows],
        "search_seeds": seeds,
        "val_accuracy": statistics.fmean(runs),
        "val_accuracy_std": statistics.stdev(runs) if len(runs) > 1 else 0.0,
        "val_accuracies": runs,
    }


def _check_same_budget(
    plains: Sequence[dict[str, Any]], kdls: Sequence[dict[str, Any]], lam: float
) -> None:
    """Plain DARTS and KDL-DARTS rows must pair up by search seed, each pair searched and
    trained alike but for the KD and complexity terms (``use_kd``, ``lam``).

    Raises:
        ValueError: the rows come from different searches or budgets.
    """
    seeds = [_search_seed(r) for r in plains], [_search_seed(r) for r in kdls]
    if sorted(map(repr, seeds[0])) != sorted(map(repr, seeds[1])):
        raise ValueError(
            f"plain DARTS and KDL-DARTS lambda={lam:g} come from different searches: "
            f"seeds {seeds[0]} vs {seeds[1]}"
        )
    kdl_by_seed = {repr(_search_seed(r)): r for r in kdls}
    for plain in plains:
        kdl = kdl_by_seed[repr(_search_seed(plain))]
        if _budget(plain, "lam", "use_kd") != _budget(kdl, "lam", "use_kd"):
            raise ValueError(
                f"plain DARTS and KDL-DARTS lambda={lam:g} of search seed "
                f"{_search_seed(plain)} were searched or trained differently (not the same "
                "budget)"
            )


def _nas_checks(rows: Sequence[dict[str, Any]] | None, lam: float) -> list[TargetCheck]:
    size, acc = "KDL-DARTS size vs plain DARTS", "KDL-DARTS accuracy vs plain DARTS [points]"
    if not rows:
        return [_missing(size, "<= 0.70", "no lambda table"), _missing(acc, ">= -1", "idem")]
    plains = [r for r in rows if not r["use_kd"] and r["lambda"] == 0]
    kdls = [r for r in rows if r["use_kd"] and math.isclose(r["lambda"], lam)]
    if not plains or not kdls:
        why = f"the table lacks the plain DARTS row or the KDL-DARTS lambda={lam:g} row"
        return [_missing(size, "<= 0.70", why), _missing(acc, ">= -1", why)]
    _check_same_budget(plains, kdls, lam)
    plain, kdl = _pool(plains, "plain DARTS"), _pool(kdls, f"KDL-DARTS lambda={lam:g}")
    ratio = kdl["params"] / plain["params"]
    points = 100.0 * (kdl["val_accuracy"] - plain["val_accuracy"])
    sizes = f"{kdl['params']:,.0f} / {plain['params']:,.0f}"
    runs = f"{row_accuracy(kdl)} vs {row_accuracy(plain)} after the same training"
    if "search_seeds" in kdl:
        seeds = ", ".join(str(s) for s in kdl["search_seeds"])
        cells = " and ".join(
            f"{k:,} / {p:,}" for k, p in zip(kdl["cells"], plain["cells"], strict=True)
        )
        sizes = f"mean over search seeds {seeds}: {sizes} ({cells})"
        runs = (
            f"every protocol run of search seeds {seeds}: {row_accuracy(kdl, 'runs')} vs "
            f"{row_accuracy(plain, 'runs')} "
            "after the same training"
        )
    return [
        TargetCheck(size, ratio, "<= 0.70", ratio <= 0.70, sizes),
        TargetCheck(acc, points, ">= -1", points >= -1.0, runs),
    ]


def format_targets(checks: Sequence[TargetCheck]) -> str:
    """The checks as a Markdown table."""
    lines = ["| target | measured | threshold | met | from |", "|---|---:|---|---|---|"]
    for c in checks:
        value = "-" if c.value is None else f"{c.value:.4g}"
        met = "not measured" if c.met is None else ("yes" if c.met else "**no**")
        lines.append(f"| {c.name} | {value} | {c.threshold} | {met} | {c.detail} |")
    return "\n".join(lines) + "\n"
