"""Measured accuracy against (channel model, L, SNR): what the adaptive length policy reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EvalTable"]


@dataclass(frozen=True)
class EvalTable:
    """Accuracy of a link measured on a test split, per channel model, L and SNR.

    Attributes:
        snr_db: the measured SNRs, Es/N0 [dB], increasing.
        accuracy: ``{channel_model: {L: [accuracy per snr_db]}}`` in [0, 1].
        meta: how it was measured (dataset, images, seed, command).
    """

    snr_db: tuple[float, ...]
    accuracy: dict[str, dict[int, tuple[float, ...]]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.snr_db) != sorted(self.snr_db) or not self.snr_db:
            raise ValueError("snr_db must be a non-empty increasing sequence")
        for model, by_len in self.accuracy.items():
            for length, row in by_len.items():
                if len(row) != len(self.snr_db):
                    raise ValueError(
                        f"accuracy[{model!r}][{length}] has {len(row)} values for "
                        f"{len(self.snr_db)} SNRs"
                    )

    def lengths(self, model: str) -> list[int]:
        """The measured L for ``model``, increasing."""
        return sorted(self._rows(model))

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

    def smallest_length(self, model: str, snr_db: float, target: float) -> int:
        """The smallest measured L whose accuracy at ``snr_db`` reaches ``target``.

        If none does, the L with the highest accuracy there (the best the link can do).
        """
        lengths = self.lengths(model)
        accs = [self.lookup(model, n, snr_db) for n in lengths]
        for n, acc in zip(lengths, accs, strict=True):
            if acc >= target:
                return n
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
