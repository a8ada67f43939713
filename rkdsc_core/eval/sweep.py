"""The evaluation sweep: several links and digital baselines over channel, CSI, L and SNR.

Every point scores the same images (``data.sample(limit, seed=seed)``), and image ``i`` is
impaired with ``frame_generator(seed, "eval", i)`` at every point and for every system, so
the links and the baselines see the same noise (and, on Rayleigh, the same gain) per image.
The networks run on the device their pipelines are on (``pipeline.to("cuda")``); the
generators stay on the CPU, so the noise is the same on every device, and the accuracies
differ between devices only where float rounding flips a decision.

``channel_uses`` counts the complex symbols each system puts on the air per image: ``P + L``
for a semantic link (pilot block + data; the pilots are sent under either CSI) and for the
transform code sent uncoded (``digital-pca-qpsk``), ``L`` for the ideal digital code and the
ideally coded transform code (genie CSI, no pilots) and ``P + ceil(T*D*b/2) + 32`` for
uncoded QPSK of every feature value, whose rows repeat under every ``L`` (see
:mod:`rkdsc_core.eval.digital`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rkdsc_core._validate import check_snr_db
from rkdsc_core.channel import ChannelKnowledge, frame_generators
from rkdsc_core.data import BatchLoader, ImageDataset
from rkdsc_core.eval.digital import (
    PcaCode,
    eval_channel,
    ideal_code_correct,
    pca_ideal_correct,
    pca_qpsk_correct,
    qpsk_channel_uses,
    uncoded_qpsk_correct,
)
from rkdsc_core.link.pipeline import SemanticPipeline

__all__ = [
    "SWEEP_COLUMNS",
    "Margins",
    "PairedTest",
    "SweepRow",
    "accuracy_grid",
    "check_heads",
    "check_sweep",
    "format_sweep",
    "hit_rates",
    "margins",
    "measure_sweep",
    "paired_test",
    "plot_sweep",
    "read_sweep",
    "replace_systems",
    "student_tokens",
    "write_sweep",
]

SWEEP_COLUMNS = (
    "system",
    "channel",
    "knowledge",
    "L",
    "snr_db",
    "accuracy",
    "channel_uses",
    "images",
    "seed",
)

log = logging.getLogger(__name__)

GridKey = tuple[str, str, int]
"""(channel model, knowledge, L)."""


@dataclass(frozen=True)
class SweepRow:
    """One point of the sweep (a CSV row).

    ``correct`` (JSON only, not a CSV column): which images the system classified right,
    in sample order, as the hex of ``numpy.packbits`` (most significant bit first: image
    ``i`` is bit ``7 - i % 8`` of byte ``i // 8``); empty for the digital baselines (and
    for a sample of no images). Every system sees the same images and noise, so two links'
    ``correct`` at one point pair up image by image (:func:`paired_test`).
    """

    system: str
    channel: str
    knowledge: str
    L: int
    snr_db: float
    accuracy: float
    channel_uses: int
    images: int
    seed: int
    correct: str = ""

    @property
    def point(self) -> tuple[str, str, int, float]:
        """``(channel, knowledge, L, SNR)``, the SNR rounded to 1e-6 dB: rows of two systems
        with equal points pair up."""
        return (self.channel, self.knowledge, self.L, round(self.snr_db, 6))

    def correct_mask(self) -> np.ndarray | None:
        """``[images]`` bool: image ``i`` classified right; ``None`` when not recorded."""
        if not self.correct:
            return None
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(self.correct), dtype=np.uint8))
        if len(bits) < self.images or bits[self.images :].any():
            raise ValueError(f"{self.system}: 'correct' does not hold {self.images} images")
        mask = bits[: self.images].astype(bool)
        if not math.isclose(mask.mean() if self.images else 0.0, self.accuracy, abs_tol=1e-9):
            raise ValueError(f"{self.system}: 'correct' disagrees with accuracy {self.accuracy}")
        return mask


class PairedTest(NamedTuple):
    """Two systems at one point, image by image (McNemar's exact test).

    Attributes:
        only_a: images ``a`` got right and ``b`` wrong.
        only_b: images ``b`` got right and ``a`` wrong.
        p_value: two-sided exact binomial p of ``only_a`` among the ``only_a + only_b``
            discordant images under "either is as likely" (1.0 with none).
    """

    only_a: int
    only_b: int
    p_value: float


def paired_test(a: SweepRow, b: SweepRow) -> PairedTest | None:
    """McNemar's exact test of ``a`` against ``b`` at the same point, on the same images.

    ``None`` when either row has no per-image record. Raises ValueError when the rows are
    not the same point of the same sample (channel, CSI, L, SNR within 1e-6 dB, images,
    seed) or a record is not its row's (:meth:`SweepRow.correct_mask`).
    """
    key = ("channel", "knowledge", "L", "images", "seed")
    if any(getattr(a, k) != getattr(b, k) for k in key) or not math.isclose(
        a.snr_db, b.snr_db, abs_tol=1e-6
    ):
        raise ValueError(f"not the same point and sample: {a.system} / {b.system}")
    ma, mb = a.correct_mask(), b.correct_mask()
    if ma is None or mb is None:
        return None
    only_a, only_b = int((ma & ~mb).sum()), int((mb & ~ma).sum())
    return PairedTest(only_a, only_b, _two_sided_sign_p(only_a + only_b, min(only_a, only_b)))


@dataclass(frozen=True)
class Margins:
    """System ``a`` against ``b`` over a set of sweep points (:func:`margins`).

    Attributes:
        points: the points both systems were scored at.
        low, high, mean: ``a``'s accuracy minus ``b``'s, in percentage points.
        ahead, level, behind: points where ``a`` scored more, the same, less.
        recorded: the points where both rows carry per-image records (the rest cannot
            be tested).
        better, worse: recorded points where McNemar's test (:func:`paired_test`) finds
            ``a`` significantly better / worse at ``alpha`` each; ``None`` when none is
            recorded.
        better_corrected, worse_corrected: the same at ``alpha / recorded`` (Bonferroni
            over these points).
    """

    points: int
    recorded: int
    low: float
    high: float
    mean: float
    ahead: int
    level: int
    behind: int
    better: int | None
    worse: int | None
    better_corrected: int | None
    worse_corrected: int | None


def margins(
    rows: Sequence[SweepRow],
    a: str,
    b: str,
    *,
    channels: Sequence[str] | None = None,
    knowledge: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    max_snr_db: float | None = None,
    alpha: float = 0.05,
) -> Margins:
    """How far ``a`` leads ``b`` at the points both have, optionally only some of them.

    Every point counts once, so a digital baseline's one measurement counts at several: its
    rows repeat across the knowledge labels (the ideal codes assume genie CSI) and the
    uncoded QPSK rows across L (it sends every bit whatever L is). Filter by ``knowledge``
    and ``lengths`` to count each once.

    Raises:
        ValueError: no point in common after the filters, ``alpha`` outside (0, 1), or a
            per-image record that is not its row's.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    def keep(r: SweepRow) -> bool:
        return (
            (channels is None or r.channel in channels)
            and (knowledge is None or r.knowledge in knowledge)
            and (lengths is None or r.L in lengths)
            and (max_snr_db is None or r.snr_db <= max_snr_db + 1e-6)
        )

    def at(system: str) -> dict[tuple[str, str, int, float], SweepRow]:
        return {r.point: r for r in rows if r.system == system and keep(r)}

    ours, theirs = at(a), at(b)
    pairs = [(ours[k], theirs[k]) for k in ours if k in theirs]
    if not pairs:
        raise ValueError(f"{a!r} and {b!r} share no point of the sweep (after the filters)")
    diffs = [100.0 * (x.accuracy - y.accuracy) for x, y in pairs]
    tests = [paired_test(x, y) for x, y in pairs]
    done = [t for t in tests if t is not None]

    def count(cut: float, sign: int) -> int | None:
        if not done:
            return None
        return sum(t.p_value < cut and sign * (t.only_a - t.only_b) > 0 for t in done)

    n, k = len(pairs), len(done)
    return Margins(
        n, k, min(diffs), max(diffs), sum(diffs) / n,
        sum(x.accuracy > y.accuracy for x, y in pairs),
        sum(x.accuracy == y.accuracy for x, y in pairs),
        sum(x.accuracy < y.accuracy for x, y in pairs),
        count(alpha, 1), count(alpha, -1), count(alpha / max(k, 1), 1),
        count(alpha / max(k, 1), -1),
    )  # fmt: skip


def _two_sided_sign_p(n: int, k: int) -> float:
    """``2 P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, ``k <= n / 2``, capped at 1.

    Summed in log space term by term (``C(n, i+1) = C(n, i) (n - i) / (i + 1)``), so it
    stays fast and finite for tens of thousands of images.
    """
    log_term, log_terms = -n * math.log(2.0), []
    for i in range(k + 1):
        log_terms.append(log_term)
        log_term += math.log(n - i) - math.log(i + 1) if i < n else 0.0
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def hit_rates(hits: Tensor) -> tuple[float, ...]:
    """Accuracy per row of an :func:`accuracy_grid` value (0 for no images)."""
    return tuple(hits.double().mean(1).tolist()) if hits.shape[1] else (0.0,) * len(hits)


def _pack(mask: Tensor) -> str:
    """``[images]`` bool as :attr:`SweepRow.correct`."""
    return np.packbits(mask.cpu().numpy().astype(np.uint8)).tobytes().hex()


def check_heads(links: Mapping[str, SemanticPipeline], data: ImageDataset) -> None:
    """Refuse links whose student head does not classify ``data``'s classes (a 10-class
    link on CIFAR-100 would score near 0 without a word).

    Raises:
        ValueError: a link with another number of classes than ``data``.
    """
    for name, pipe in links.items():
        if pipe.student.num_classes != len(data.classes):
            raise ValueError(
                f"link {name!r} classifies {pipe.student.num_classes} classes, "
                f"{data.name} has {len(data.classes)}"
            )


@torch.no_grad()
def student_tokens(
    pipeline: SemanticPipeline, subset: ImageDataset, batch_size: int = 250
) -> tuple[list[Tensor], list[Tensor]]:
    """The student's feature tokens and the labels of ``subset``, batch by batch, on the
    pipeline's device (the images are moved there batch by batch)."""
    pipeline.eval()
    device = pipeline.pilots.device
    tokens, labels = [], []
    for x, y in BatchLoader(subset, batch_size):
        tokens.append(pipeline.student.forward_tokens(x.to(device)))
        labels.append(y.to(device))
    return tokens, labels


@torch.no_grad()
def accuracy_grid(
    pipeline: SemanticPipeline,
    tokens: Sequence[Tensor],
    labels: Sequence[Tensor],
    *,
    channels: Sequence[str],
    knowledge: Sequence[str],
    lengths: Sequence[int],
    snr_db: Sequence[float],
    seed: int,
    desc: str = "sweep",
) -> dict[GridKey, Tensor]:
    """Which images are classified right, per (channel, knowledge, L), from student tokens.

    Image ``i`` (its position across the batches) uses ``frame_generator(seed, "eval", i)``.
    A progress bar (``desc``) counts the (channel, L, SNR) points.

    Returns:
        per key, a ``[len(snr_db), images]`` bool tensor (its row means are the accuracies).
    """
    pipeline.eval()
    grid: dict[GridKey, Tensor] = {}
    bar = tqdm(total=len(channels) * len(lengths) * len(snr_db), desc=desc, leave=False)
    for model in channels:
        channel = eval_channel(model)
        for n in lengths:
            rows: dict[str, list[Tensor]] = {k: [] for k in knowledge}
            for snr in snr_db:
                hits: dict[str, list[Tensor]] = {k: [] for k in knowledge}
                seen = 0
                for t, y in zip(tokens, labels, strict=True):
                    gens = frame_generators(seed, "eval", range(seen, seen + len(y)))
                    tx = pipeline.transmit_tokens(t, snr, n)
                    out = pipeline.apply_channel(channel, tx, snr, generator=gens)
                    for k in knowledge:
                        logits, _ = pipeline.receive(out.y, out.received, pipeline.estimate(k, out))
                        hits[k].append((logits.argmax(1) == y).cpu())
                    seen += len(y)
                for k in knowledge:
                    rows[k].append(
                        torch.cat(hits[k]) if hits[k] else torch.zeros(0, dtype=torch.bool)
                    )
                bar.update()
            for k in knowledge:
                grid[(model, k, n)] = (
                    torch.stack(rows[k]) if rows[k] else torch.zeros(0, 0, dtype=torch.bool)
                )
    bar.close()
    return grid


@torch.no_grad()
def measure_sweep(
    links: Mapping[str, SemanticPipeline],
    data: ImageDataset,
    *,
    channels: Sequence[str] = ("awgn", "rayleigh"),
    knowledge: Sequence[str] = ("perfect", "pilot"),
    snr_db: Sequence[float] | None = None,
    lengths: Sequence[int] | None = None,
    limit: int = 1000,
    seed: int = 0,
    digital: bool = True,
    digital_bits: int = 8,
    pca_fit: ImageDataset | None = None,
    pca_images: int = 2000,
    pca_bits: int = 4,
    batch_size: int = 250,
) -> list[SweepRow]:
    """Score every link and (with ``digital``) the digital baselines on one image sample.

    Args:
        links: named pipelines; the first is the reference whose student the digital
            baselines quantise, and whose head decodes them, so its head must classify
            clean tokens (a stage-1 student; a CE-only link's head only knows decoded ones).
        lengths: ``L`` values for every system (default: each link's own lengths; the
            digital baselines use the reference link's).
        pca_fit: with ``digital``, the images (a training split) whose reference-student
            tokens fit the transform code (:class:`PcaCode`) of the ``digital-pca-b{pca_bits}``
            and ``digital-pca-qpsk-b{pca_bits}`` baselines, ``pca_images`` of them, seeded;
            ``None``: no transform-coded baselines.
    """
    from rkdsc_core.eval.table import DEFAULT_SNRS

    snrs = tuple(float(s) for s in (DEFAULT_SNRS if snr_db is None else snr_db))
    check_sweep(
        links, channels=channels, knowledge=knowledge, snr_db=snrs, lengths=lengths, limit=limit,
        digital=digital, digital_bits=digital_bits, pca_bits=pca_bits,
    )  # fmt: skip
    check_heads(links, data)
    if digital and pca_fit is not None and pca_images < 1:
        raise ValueError(f"pca_images must be >= 1 to fit digital-pca, got {pca_images}")
    subset = data.sample(min(limit, len(data)), seed=seed)
    images = len(subset)
    rows: list[SweepRow] = []

    def add(
        system: str, key: GridKey, values: Sequence[float], uses: int, hits: Tensor | None = None
    ) -> None:
        """Rows per SNR; ``hits`` (an :func:`accuracy_grid` value) also records the images."""
        model, k, n = key
        records = [""] * len(snrs) if hits is None else [_pack(h) for h in hits]
        for s, a, c in zip(snrs, values, records, strict=True):
            rows.append(SweepRow(system, model, k, n, s, a, uses, images, seed, c))

    ref_tokens: tuple[list[Tensor], list[Tensor]] | None = None
    for name, pipe in links.items():
        toks, labs = student_tokens(pipe, subset, batch_size)
        lens = tuple(lengths or pipe.lengths)
        grid = accuracy_grid(
            pipe, toks, labs, channels=channels, knowledge=knowledge, lengths=lens,
            snr_db=snrs, seed=seed, desc=f"sweep {name}",
        )  # fmt: skip
        for key, hits in grid.items():
            add(name, key, hit_rates(hits), pipe.num_pilots + key[2], hits)
        if ref_tokens is None and digital:
            ref_tokens = (toks, labs)
            _check_digital_reference(name, pipe, toks, labs, grid)
    if not digital or ref_tokens is None:
        return rows
    ref = next(iter(links.values()))
    toks, labs = ref_tokens
    code = None
    if pca_fit is not None:
        fit_subset = pca_fit.sample(min(pca_images, len(pca_fit)), seed=seed)
        fit_tokens = torch.cat(student_tokens(ref, fit_subset, batch_size)[0])
        code = PcaCode.fit(fit_tokens, bits=pca_bits)
        log.info("digital-pca: %d components from %d images", code.max_components, len(fit_tokens))
    values = int(toks[0][0].numel())
    ideal, qpsk = f"digital-ideal-b{digital_bits}", f"digital-qpsk-b{digital_bits}"
    uses_qpsk = qpsk_channel_uses(values, digital_bits, ref.num_pilots)

    bar = tqdm(desc="sweep digital baselines", unit="point", leave=False)

    def accuracy_per_snr(score: Callable[..., int]) -> list[float]:
        """``score(tokens, labels, snr_db=, seqs=)`` summed over the batches, per SNR."""
        accs = []
        for s in snrs:
            correct = seen = 0
            for t, y in zip(toks, labs, strict=True):
                correct += score(t, y, snr_db=s, seqs=range(seen, seen + len(y)))
                seen += len(y)
            accs.append(correct / max(1, seen))
            bar.update()
        return accs

    ideal_code = partial(ideal_code_correct, ref, bits=digital_bits, seed=seed)
    for model in channels:
        for n in tuple(lengths or ref.lengths):
            accs = accuracy_per_snr(partial(ideal_code, model=model, length=n))
            for k in knowledge:  # genie CSI: the same under every knowledge label
                add(ideal, (model, k, n), accs, n)
            if code is None:
                continue
            accs = accuracy_per_snr(
                partial(pca_ideal_correct, ref, code, model=model, length=n, seed=seed)
            )
            for k in knowledge:
                add(f"digital-pca-b{code.bits}", (model, k, n), accs, n)
            for k in knowledge:  # sent uncoded after the pilots: the receiver's own CSI
                accs = accuracy_per_snr(
                    partial(
                        pca_qpsk_correct, ref, code, model=model, knowledge=k, length=n,
                        seed=seed,
                    )
                )  # fmt: skip
                add(f"digital-pca-qpsk-b{code.bits}", (model, k, n), accs, ref.num_pilots + n)
        for k in knowledge:
            accs = accuracy_per_snr(
                partial(
                    uncoded_qpsk_correct, ref, model=model, knowledge=k, bits=digital_bits,
                    seed=seed,
                )
            )  # fmt: skip
            for n in tuple(lengths or ref.lengths):  # independent of L: one line per L
                add(qpsk, (model, k, n), accs, uses_qpsk)
    bar.close()
    return rows


def check_sweep(
    links: Mapping[str, SemanticPipeline],
    *,
    channels: Sequence[str],
    knowledge: Sequence[str],
    snr_db: Sequence[float],
    lengths: Sequence[int] | None,
    limit: int,
    digital: bool,
    digital_bits: int,
    pca_bits: int,
) -> None:
    """Refuse a bad :func:`measure_sweep` before any of it is measured (a full sweep takes
    minutes); the arguments are ``measure_sweep``'s.

    Raises:
        ValueError: what is wrong.
    """
    snrs = tuple(snr_db)
    if not links:
        raise ValueError("measure_sweep needs at least one link")
    if not (channels and knowledge and snrs) or (lengths is not None and not lengths):
        raise ValueError("channels, knowledge, SNRs and lengths must not be empty")
    for model in channels:
        eval_channel(model)
    for k in knowledge:
        ChannelKnowledge(k)
    check_snr_db(torch.tensor(snrs))
    for what, values in (("channels", channels), ("knowledge", knowledge), ("SNRs", snrs),
                         ("lengths", lengths or ())):  # fmt: skip
        if len(set(values)) < len(values):
            raise ValueError(f"{what} repeat a value: {list(values)}")
    for name, pipe in links.items():
        if name.startswith("digital-"):
            raise ValueError(f"link name {name!r}: 'digital-' names the digital baselines")
        missing = sorted(set(lengths or ()) - set(pipe.lengths))
        if missing:
            raise ValueError(f"link {name!r} sends L in {pipe.lengths}, not {missing}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1 image, got {limit}")
    if digital and not (1 <= digital_bits <= 16 and 1 <= pca_bits <= 16):
        raise ValueError(
            f"digital_bits and pca_bits must be in [1, 16], got {digital_bits} and {pca_bits}"
        )


def write_sweep(
    rows: Sequence[SweepRow], out: Path, *, meta: dict[str, Any] | None = None
) -> list[Path]:
    """Write ``sweep.csv``, ``sweep.json`` and the plots (see :func:`plot_sweep`) into
    ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    doc = {"meta": meta or {}, "rows": [asdict(r) for r in rows]}
    (out / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n")
    return [out / "sweep.csv", out / "sweep.json", *plot_sweep(rows, out)]


@torch.no_grad()
def _check_digital_reference(
    name: str,
    pipeline: SemanticPipeline,
    tokens: Sequence[Tensor],
    labels: Sequence[Tensor],
    grid: dict[GridKey, Tensor],
) -> None:
    """Log the reference head's accuracy on clean tokens; warn when far below the link's.

    The digital baselines decode with this head. A head trained only on decoded tokens
    (a CE-only link) scores near chance on clean ones and would sink every digital row.
    """
    correct = sum(
        int((pipeline.student.forward_head(t).argmax(1) == y).sum())
        for t, y in zip(tokens, labels, strict=True)
    )
    clean = correct / max(1, sum(len(y) for y in labels))
    best = max((max(hit_rates(v)) for v in grid.values()), default=0.0)
    log.info("digital reference %s: %.4f on clean tokens (its link: up to %.4f)", name, clean, best)
    if clean < 0.5 * best:
        log.warning(
            "the digital baselines decode with %s's head, which scores %.4f on clean tokens "
            "against %.4f through its own codec: its head knows only decoded tokens (a CE-only "
            "link?), so the digital rows are meaningless; put a stage-1 student first",
            name, clean, best,
        )  # fmt: skip


def check_update(
    old: Sequence[SweepRow],
    links: Mapping[str, SemanticPipeline],
    *,
    images: int,
    seed: int,
    channels: Sequence[str],
    knowledge: Sequence[str],
    snr_db: Sequence[float],
    lengths: Sequence[int] | None,
) -> None:
    """Refuse, before measuring, a :func:`measure_sweep` of ``links`` (without the digital
    baselines) whose rows :func:`replace_systems` would not swap into ``old``.

    Args:
        images: the number of test images the sweep will score (``min(limit, len(data))``).
        channels, knowledge, snr_db, lengths, seed: ``measure_sweep``'s.

    Raises:
        ValueError: as :func:`replace_systems` would, after the measuring.
    """
    planned = [
        SweepRow(name, c, k, n, float(db), 0.0, pipe.num_pilots + n, images, seed)
        for name, pipe in links.items()
        for c in channels
        for k in knowledge
        for n in lengths or pipe.lengths
        for db in snr_db
    ]
    replace_systems(old, planned)


def replace_systems(old: Sequence[SweepRow], new: Sequence[SweepRow]) -> list[SweepRow]:
    """``old`` with the rows of every system measured in ``new`` swapped for the new ones.

    Rerunning one link of a finished sweep gives the rows a full rerun would (with the same
    channel and evaluation code): image ``i`` meets the same noise whatever else is
    measured. Each system keeps its place. The digital baselines (systems named
    ``digital-...``) quantise the first link's student and are not remeasured, so replacing
    that link is refused while they are there.

    Raises:
        ValueError: ``new`` scores another sample (image count, seed), names a system
            ``old`` does not have, replaces a digital baseline or the digital reference, or
            measures a system at other points (channel, knowledge, L, SNR, each once) or
            with other channel uses (pilots) than ``old`` did.
    """

    def points(rows: Sequence[SweepRow], system: str) -> list[tuple[Any, ...]]:
        return sorted((*r.point, r.channel_uses) for r in rows if r.system == system)

    if not old or not new:
        raise ValueError("replace_systems needs rows in both sweeps")
    sample = {(r.images, r.seed) for r in [*old, *new]}
    if len(sample) > 1:
        raise ValueError(f"the sweeps score different samples (images, seed): {sorted(sample)}")
    old_systems = list(dict.fromkeys(r.system for r in old))
    links = [s for s in old_systems if not s.startswith("digital-")]
    replaced = list(dict.fromkeys(r.system for r in new))
    for system in replaced:
        if system not in old_systems:
            raise ValueError(
                f"the sweep has no system {system!r} (it has {old_systems}); a new system "
                "needs a whole sweep"
            )
        if system.startswith("digital-"):
            raise ValueError(f"{system!r} is a digital baseline; rerun the whole sweep")
        if len(links) < len(old_systems) and system == links[0]:
            raise ValueError(
                f"{system!r} is the digital baselines' reference link; rerun the whole sweep"
            )
        if points(new, system) != points(old, system):
            raise ValueError(
                f"{system!r} is measured at other points (channel, knowledge, L, SNR) or with "
                "other channel uses than in the sweep it joins"
            )
    by_system = {s: [r for r in new if r.system == s] for s in replaced}
    return [r for s in old_systems for r in by_system.get(s, [x for x in old if x.system == s])]


def read_sweep(folder: Path) -> tuple[list[SweepRow], dict[str, Any]]:
    """Read what :func:`write_sweep` wrote: ``(rows, meta)`` from ``folder/sweep.json``.

    Raises:
        OSError: no readable ``sweep.json``; ValueError / KeyError / TypeError: not a sweep.
    """
    doc = json.loads((folder / "sweep.json").read_text())
    return [SweepRow(**r) for r in doc["rows"]], dict(doc.get("meta", {}))


def format_sweep(
    rows: Sequence[SweepRow],
    *,
    length: int,
    knowledge: str,
    snr_db: Sequence[float] | None = None,
) -> str:
    """Markdown: one table per channel, a row per system, a column per SNR, at one ``L``.

    Accuracies are fractions with 3 decimals; a system without a point shows ``-``. Systems
    keep the sweep's order; ``snr_db`` picks columns (default every SNR of the sweep).

    Raises:
        ValueError: no row at this ``length`` and ``knowledge``, or at an ``snr_db``.
    """
    picked = [r for r in rows if (r.L, r.knowledge) == (length, knowledge)]
    if not picked:
        raise ValueError(f"the sweep has no rows at L={length} with {knowledge} CSI")
    measured = sorted({r.snr_db for r in picked})
    snrs = measured if snr_db is None else [float(s) for s in snr_db]
    unknown = [s for s in snrs if s not in measured]
    if unknown:
        raise ValueError(
            f"the sweep has no rows at {', '.join(f'{s:g}' for s in unknown)} dB; "
            f"its SNRs: {', '.join(f'{s:g}' for s in measured)}"
        )
    acc = {(r.channel, r.system, r.snr_db): r for r in picked}
    images = {r.images for r in picked}
    lines: list[str] = []
    for channel in dict.fromkeys(r.channel for r in picked):
        systems = dict.fromkeys(r.system for r in picked if r.channel == channel)
        lines += [
            f"**{channel}**, L = {length}, {knowledge} CSI, "
            f"{'/'.join(str(n) for n in sorted(images))} test images:",
            "",
            "| system | channel uses | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
            "|---|---:|" + "---:|" * len(snrs),
        ]
        for system in systems:
            points = [acc.get((channel, system, s)) for s in snrs]
            uses = next(p.channel_uses for p in points if p is not None) if any(points) else 0
            cells = ["-" if p is None else f"{p.accuracy:.3f}" for p in points]
            lines.append(f"| {system} | {uses} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_sweep(rows: Sequence[SweepRow], out: Path, *, snrs_for_l: int = 3) -> list[Path]:
    """``accuracy_vs_snr.png`` (each system's largest L, per channel; pilot solid, perfect
    dashed) and, for a sweep of more than one L, ``accuracy_vs_L.png`` (a few SNRs, per
    channel; pilot CSI if swept, else the first). One legend beside the panels: a colour per
    system, a line style per CSI or SNR. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    channels = list(dict.fromkeys(r.channel for r in rows))
    systems = list(dict.fromkeys(r.system for r in rows))
    colors = {s: f"C{i % 10}" for i, s in enumerate(systems)}
    lmax = {s: max(r.L for r in rows if r.system == s) for s in systems}
    paths: list[Path] = []

    def save(fig: Any, name: str, styles: list[tuple[str, Any, str]], system_label: str) -> None:
        handles = [
            Line2D([], [], color=colors[s], lw=2, label=system_label.format(s=s, L=lmax[s]))
            for s in systems
        ]
        handles += [
            Line2D([], [], color="0.3", linestyle=ls, marker=m or None, label=label)
            for label, ls, m in styles
        ]
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)  # fmt: skip
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)

    style = {"pilot": "-", "perfect": "--", "none": ":"}
    knowledges = list(dict.fromkeys(r.knowledge for r in rows))
    fig, axes = plt.subplots(1, len(channels), figsize=(6 * len(channels), 4.5), squeeze=False)
    for ax, ch in zip(axes[0], channels, strict=True):
        for sys_ in systems:
            sel = [r for r in rows if (r.channel, r.system, r.L) == (ch, sys_, lmax[sys_])]
            for k in knowledges:
                pts = sorted((r.snr_db, r.accuracy) for r in sel if r.knowledge == k)
                if pts:
                    ax.plot(*zip(*pts, strict=True), style.get(k, "-"), color=colors[sys_])
        ax.set(title=ch, xlabel="SNR [dB]", ylabel="accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
    csi = [(f"{k} CSI", style.get(k, "-"), "") for k in knowledges]
    save(fig, "accuracy_vs_snr.png", csi, "{s} (L={L})")
    if len({r.L for r in rows}) < 2:  # one L: no plot over L (nor a stale one left)
        (out / "accuracy_vs_L.png").unlink(missing_ok=True)
        return paths

    all_snrs = sorted({r.snr_db for r in rows})
    picks = sorted({all_snrs[round(i * (len(all_snrs) - 1) / max(1, snrs_for_l - 1))]
                    for i in range(min(snrs_for_l, len(all_snrs)))})  # fmt: skip
    k_plot = "pilot" if "pilot" in knowledges else knowledges[0]
    marks = [("-", "o"), ("--", "s"), (":", "^")]
    fig, axes = plt.subplots(1, len(channels), figsize=(6 * len(channels), 4.5), squeeze=False)
    for ax, ch in zip(axes[0], channels, strict=True):
        for sys_ in systems:
            for j, s in enumerate(picks):
                pts = sorted(
                    (r.L, r.accuracy)
                    for r in rows
                    if (r.channel, r.system, r.knowledge, r.snr_db) == (ch, sys_, k_plot, s)
                )
                if pts:
                    ls, m = marks[j % 3]
                    ax.plot(*zip(*pts, strict=True), linestyle=ls, marker=m, color=colors[sys_])
        ax.set(title=f"{ch} ({k_plot} CSI)", xlabel="L (data symbols)", ylabel="accuracy")
        ax.set_ylim(0, 1)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    snr_styles = [(f"{s:g} dB", *marks[j % 3]) for j, s in enumerate(picks)]
    save(fig, "accuracy_vs_L.png", snr_styles, "{s}")
    return paths
