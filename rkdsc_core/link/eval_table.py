"""Measured accuracy against (channel model, L, SNR): what the adaptive length policy reads."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["EvalTable"]


@dataclass(frozen=True)
class EvalTable:
    """Accuracy of a link measured on a test split, per channel model, L and SNR.

    Attributes:
        snr_db: the measured SNRs, Es/N0 [dB], increasing.
        accuracy: ``{channel_model: {L: [accuracy per snr_db]}}`` in [0, 1].
        meta: how it was measured (dataset, ``images`` per point, seed, command).
    """

    snr_db: tuple[float, ...]
    accuracy: dict[str, dict[int, tuple[float, ...]]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        snr = list(self.snr_db)
        if not snr or any(b <= a for a, b in itertools.pairwise(snr)):
            raise ValueError(f"snr_db must be a non-empty strictly increasing sequence: {snr}")
        if not all(math.isfinite(s) for s in snr):
            raise ValueError(f"snr_db must be finite: {snr}")
        for model, by_len in self.accuracy.items():
            for length, row in by_len.items():
                if len(row) != len(self.snr_db):
                    raise ValueError(
                        f"accuracy[{model!r}][{length}] has {len(row)} values for "
                        f"{len(self.snr_db)} SNRs"
                    )
                if not all(0.0 <= a <= 1.0 for a in row):  # NaN fails too
                    raise ValueError(
                        f"accuracy[{model!r}][{length}] must lie in [0, 1]: {list(row)}"
                    )
        n = self.meta.get("images")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"meta.images must be a whole number of images >= 1, got {n!r}")

    def lengths(self, model: str) -> list[int]:
        """The measured L for ``model``, increasing."""
        return sorted(self._rows(model))

    def check_lengths(self, allowed: Iterable[int]) -> None:
        """Refuse a table measured at an ``L`` a codec with lengths ``allowed`` does not send.

        Raises:
            ValueError: naming the channel model and its lengths.
        """
        sent = set(allowed)
        for model in self.accuracy:
            if not set(self.lengths(model)) <= sent:
                raise ValueError(
                    f"{model} lengths {self.lengths(model)} are not all lengths the codec "
                    f"sends ({sorted(sent)})"
                )

    def _rows(self, model: str) -> dict[int, tuple[float, ...]]:
        if model not in self.accuracy:
            raise ValueError(
                f"no measurements for channel model {model!r}; have {sorted(self.accuracy)}"
            )
        return self.accuracy[model]

    def lookup(self, model: str, length: int, snr_db: float) -> float:
        """Accuracy at ``snr_db`` (linear interpolation, clamped at the table's ends)."""
        rows = self._rows(model)
        if length not in rows:
            raise ValueError(f"L={length} not measured for {model!r}; have {sorted(rows)}")
        return float(np.interp(snr_db, self.snr_db, rows[length]))

    @property
    def images(self) -> int | None:
        """Test images behind each accuracy (``meta["images"]``); ``None`` if not recorded."""
        n = self.meta.get("images")
        return None if n is None else int(n)

    def lower_bound(self, model: str, length: int, snr_db: float, confidence: float) -> float:
        """One-sided Wilson lower confidence bound of the accuracy at ``snr_db``.

        The true accuracy of the link on the split lies above the bound with probability
        ``confidence`` (for one point of the table; interpolated like :meth:`lookup`), given
        that it was measured on :attr:`images` images. ``confidence=0.5`` is the estimate itself.

        Raises:
            ValueError: ``confidence`` outside [0.5, 1), or a margin asked of a table that does
                not record its image count.
        """
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must lie in [0.5, 1); got {confidence}")
        p = self.lookup(model, length, snr_db)
        z = NormalDist().inv_cdf(confidence)
        if z == 0.0:
            return p
        n = self.images
        if n is None:
            raise ValueError(
                "the eval table does not record how many images it was measured on "
                "(meta.images), so it has no confidence bound; use confidence 0.5"
            )
        z2n = z * z / n
        centre = p + z2n / 2
        spread = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
        return max(0.0, (centre - spread) / (1 + z2n))

    def smallest_length(
        self, model: str, snr_db: float, target: float, *, confidence: float = 0.5
    ) -> int:
        """The smallest measured L whose accuracy at ``snr_db`` reaches ``target``.

        With ``confidence`` above 0.5 an L qualifies only when its :meth:`lower_bound` at that
        confidence reaches ``target``: a margin for the sampling noise of the table's images.
        If no L qualifies, the L with the highest measured accuracy there (the best the link
        can do). Below the lowest measured SNR nothing is known, so no L qualifies: the best
        L at the lowest SNR, never a short one read off a better channel.
        """
        lengths = self.lengths(model)
        below = snr_db < self.snr_db[0]  # nothing measured there: no L qualifies
        for n in [] if below else lengths:
            if self.lower_bound(model, n, snr_db, confidence) >= target:
                return n
        accs = [self.lookup(model, n, snr_db) for n in lengths]  # clamped to the lowest SNR
        return lengths[int(np.argmax(accs))]

    def to_json(self) -> dict[str, Any]:
        return {
            "snr_db": list(self.snr_db),
            "accuracy": {
                m: {str(n): list(row) for n, row in by_len.items()}
                for m, by_len in self.accuracy.items()
            },
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EvalTable:
        return cls(
            snr_db=tuple(float(s) for s in doc["snr_db"]),
            accuracy={
                m: {int(n): tuple(float(a) for a in row) for n, row in by_len.items()}
                for m, by_len in doc["accuracy"].items()
            },
            meta=dict(doc.get("meta", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> EvalTable:
        return cls.from_json(json.loads(path.read_text()))
