"""Prometheus metrics of the receiver, on an injected registry."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram

from services._metrics import LATENCY_BUCKETS, snr_bin

__all__ = ["FATES", "ReceiverMetrics"]

FATES = ("predicted", "lost", "error")
"""What the receiver made of a frame."""

_SNR_BUCKETS = tuple(float(v) for v in range(-30, 61, 5))
_SNR_ERROR_BUCKETS = (-10.0, -5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
_SYMBOL_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ReceiverMetrics:
    """The receiver's metrics; names follow ``rkdsc_receiver_<what>_<unit>``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames = Counter(
            "rkdsc_receiver_frames",
            "Frames answered, by fate: predicted, lost (flagged lost by the channel) or error.",
            ["fate"],
            registry=registry,
        )
        for fate in FATES:
            self.frames.labels(fate)
        self.frames_expired = Counter(
            "rkdsc_receiver_frames_expired",
            "Frames answered DEADLINE_EXCEEDED without inference, because their expiry "
            "(expires_unix_ns) had passed when their turn came (also in frames{fate=error}).",
            registry=registry,
        )
        self.predictions = Counter(
            "rkdsc_receiver_predictions",
            "Predictions by applied-SNR bin (2 dB, centre in dB) and correctness "
            "(true/false, unknown without a label).",
            ["snr_db_bin", "correct"],
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "rkdsc_receiver_decode_seconds",
            "Time from a frame's arrival to its result: validation, CSI and inference [s]; "
            "frames skipped as expired are not observed.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.estimated_snr_db = Histogram(
            "rkdsc_receiver_estimated_snr_db",
            "The receiver's Es/N0 estimate per frame [dB].",
            buckets=_SNR_BUCKETS,
            registry=registry,
        )
        self.snr_estimate_error_db = Histogram(
            "rkdsc_receiver_snr_estimate_error_db",
            "Estimated minus applied Es/N0 per frame [dB].",
            buckets=_SNR_ERROR_BUCKETS,
            registry=registry,
        )
        self.symbols_per_frame = Histogram(
            "rkdsc_receiver_symbols_per_frame",
            "Data symbols L per decoded frame.",
            buckets=_SYMBOL_BUCKETS,
            registry=registry,
        )

    def record_prediction(
        self, channel_snr_db: float, estimated_snr_db: float, correct: bool | None
    ) -> None:
        """Count one prediction and its SNR estimate."""
        label = "unknown" if correct is None else str(correct).lower()
        self.predictions.labels(snr_bin(channel_snr_db), label).inc()
        if math.isfinite(estimated_snr_db):  # NaN: too few pilots arrived to estimate it
            self.estimated_snr_db.observe(estimated_snr_db)
            self.snr_estimate_error_db.observe(estimated_snr_db - channel_snr_db)
