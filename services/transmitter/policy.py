"""The length policy: how many complex symbols ``L`` each image gets (fixed or adaptive)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rkdsc_core.link import EvalTable

__all__ = ["LengthPolicy", "PolicyError", "PolicyStore"]

Mode = Literal["fixed", "adaptive"]


class PolicyError(ValueError):
    """A policy that cannot be applied; ``code`` is the gRPC status name it maps to.

    Attributes:
        field: the offending field (``mode``, ``fixed_length``, ``target_accuracy``,
            ``confidence``).
        code: ``INVALID_ARGUMENT`` (bad value) or ``FAILED_PRECONDITION`` (the loaded link
            cannot support it, e.g. adaptive mode without an eval table).
    """

    def __init__(self, field: str, message: str, *, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = code


@dataclass(frozen=True)
class LengthPolicy:
    """One version of the policy.

    Attributes:
        mode: ``fixed`` (always ``fixed_length``) or ``adaptive`` (smallest ``L`` whose measured
            accuracy at the link's SNR reaches ``target_accuracy`` with ``confidence``).
        fixed_length: ``L`` for fixed mode, one of the codec's lengths.
        target_accuracy: in [0, 1], for adaptive mode.
        version: the transmitter config version, from 1, bumped by each accepted change.
        confidence: in [0.5, 1), for adaptive mode: an ``L`` qualifies only when its accuracy
            reaches the target with this one-sided confidence, given the eval table's images
            (:meth:`EvalTable.lower_bound`); 0.5 reads the measured accuracy, no margin.
    """

    mode: Mode
    fixed_length: int
    target_accuracy: float
    version: int
    confidence: float


class PolicyStore:
    """The current :class:`LengthPolicy` of a transmitter, validated as a whole on each change.

    Args:
        lengths: the codec's allowed ``L``, increasing.
        eval_table: the link's measured accuracy table (``None``: adaptive mode unavailable),
            measured at allowed lengths only.
        channel_model: the eval-table row the adaptive mode reads (``awgn``, ...).
        mode, fixed_length, target_accuracy, confidence: the initial policy
            (``fixed_length=None``: ``l_max``); validated like :meth:`set`.

    Raises:
        PolicyError: the initial policy is invalid.
        ValueError: no lengths, or an eval table measured at a length not allowed.
    """

    def __init__(
        self,
        lengths: tuple[int, ...],
        eval_table: EvalTable | None,
        *,
        channel_model: str,
        mode: Mode = "fixed",
        fixed_length: int | None = None,
        target_accuracy: float = 0.9,
        confidence: float = 0.95,
    ) -> None:
        if not lengths:
            raise ValueError("lengths must not be empty")
        self.lengths = tuple(sorted(lengths))
        if eval_table is not None:
            eval_table.check_lengths(self.lengths)
        self.eval_table = eval_table
        self.channel_model = channel_model
        self._current = self._validated(mode, fixed_length, target_accuracy, confidence, version=1)

    @property
    def current(self) -> LengthPolicy:
        return self._current

    @property
    def l_max(self) -> int:
        return self.lengths[-1]

    def set(
        self,
        mode: Mode | None,
        fixed_length: int | None,
        target_accuracy: float,
        confidence: float | None = None,
    ) -> LengthPolicy:
        """Replace the policy (``fixed_length=None``: ``l_max``; ``confidence=None``: keep the
        current one) and bump the version.

        Raises:
            PolicyError: nothing is changed.
        """
        cur = self._current
        policy = self._validated(
            mode,
            fixed_length,
            target_accuracy,
            cur.confidence if confidence is None else confidence,
            cur.version + 1,
        )
        self._current = policy
        return policy

    def choose(
        self, snr_db: float, policy: LengthPolicy | None = None, *, channel_model: str = ""
    ) -> int:
        """``L`` for the next frame on a link whose estimated SNR is ``snr_db`` [dB].

        ``channel_model``: the channel the link's last result came through; its row of the
        eval table is read when the table has one, else the hint's (:attr:`channel_model`).
        """
        p = self._current if policy is None else policy
        if p.mode == "fixed":
            return p.fixed_length
        assert self.eval_table is not None  # checked by _validated
        row = channel_model if channel_model in self.eval_table.accuracy else self.channel_model
        return self.eval_table.smallest_length(
            row, snr_db, p.target_accuracy, confidence=p.confidence
        )

    def _validated(
        self,
        mode: Mode | None,
        fixed_length: int | None,
        target_accuracy: float,
        confidence: float,
        version: int,
    ) -> LengthPolicy:
        if mode not in ("fixed", "adaptive"):
            raise PolicyError(
                "mode", f"must be MODE_FIXED or MODE_ADAPTIVE (fixed, adaptive); got {mode!r}"
            )
        length = self.l_max if fixed_length is None else int(fixed_length)
        if length not in self.lengths:
            raise PolicyError(
                "fixed_length",
                f"must be one of the allowed lengths {list(self.lengths)} (0 = l_max); "
                f"got {fixed_length}",
            )
        if not (math.isfinite(target_accuracy) and 0.0 <= target_accuracy <= 1.0):
            raise PolicyError("target_accuracy", f"must lie in [0, 1]; got {target_accuracy}")
        if not (math.isfinite(confidence) and 0.5 <= confidence < 1.0):
            raise PolicyError(
                "confidence", f"must lie in [0.5, 1) (0.5 = no margin); got {confidence}"
            )
        if mode == "adaptive":
            if self.eval_table is None:
                raise PolicyError(
                    "mode",
                    "adaptive mode needs the link's eval table (eval_table.json in the weights "
                    "folder, made by `rkdsc eval table --out`); use MODE_FIXED",
                    code="FAILED_PRECONDITION",
                )
            if self.channel_model not in self.eval_table.accuracy:
                raise PolicyError(
                    "mode",
                    f"the eval table has no measurements for channel model "
                    f"{self.channel_model!r} (has {sorted(self.eval_table.accuracy)}); set "
                    "RKDSC_TRANSMITTER_CHANNEL_MODEL_HINT or use MODE_FIXED",
                    code="FAILED_PRECONDITION",
                )
            if confidence > 0.5 and self.eval_table.images is None:
                raise PolicyError(
                    "mode",
                    "the eval table does not record how many images it was measured on "
                    f"(meta.images), so adaptive mode cannot keep a confidence of {confidence:g}; "
                    "set confidence 0.5 (no margin) in the policy or with "
                    "RKDSC_TRANSMITTER_POLICY__CONFIDENCE=0.5, or use MODE_FIXED",
                    code="FAILED_PRECONDITION",
                )
        return LengthPolicy(mode, length, float(target_accuracy), version, float(confidence))
