"""Prometheus metrics of the transmitter, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services._metrics import LATENCY_BUCKETS
from services.transmitter.policy import LengthPolicy

__all__ = ["FATES", "TransmitterMetrics"]

FATES = ("predicted", "lost", "error")
"""Values of the ``fate`` label of ``rkdsc_transmitter_frames_total``."""


class TransmitterMetrics:
    """The transmitter's metrics (names ``rkdsc_transmitter_<what>_<unit>``).

    Args:
        registry: where to register (one per server, so tests can run several).
        lengths: the codec's allowed ``L``: the buckets of ``symbols_per_frame``.
    """

    def __init__(self, registry: CollectorRegistry, lengths: tuple[int, ...]) -> None:
        self.frames = Counter(
            "rkdsc_transmitter_frames",
            "Frames (images) accounted for, by fate: predicted, lost or error.",
            ["fate"],
            registry=registry,
        )
        for fate in FATES:
            self.frames.labels(fate)
        self.images = Counter(
            "rkdsc_transmitter_images",
            "Images received (Classify requests and run images), valid or not.",
            registry=registry,
        )
        self.encode_seconds = Histogram(
            "rkdsc_transmitter_encode_seconds",
            "Image decoding + student + CAT encoder time per frame [s].",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "rkdsc_transmitter_end_to_end_seconds",
            "Time from sending a frame to its result coming back [s].",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.symbols_per_frame = Histogram(
            "rkdsc_transmitter_symbols_per_frame",
            "L, complex data symbols per frame sent.",
            buckets=tuple(float(n) for n in sorted(lengths)),
            registry=registry,
        )
        self.symbols = Counter(
            "rkdsc_transmitter_symbols",
            "Complex data symbols sent (pilots not counted).",
            registry=registry,
        )
        self.in_flight = Gauge(
            "rkdsc_transmitter_in_flight",
            "Frames being encoded or awaiting their result, all links.",
            registry=registry,
        )
        self.links_open = Gauge(
            "rkdsc_transmitter_links_open",
            "Channel links (streams to the emulator) open; the default one once it sent a frame.",
            registry=registry,
        )
        self.links_closed = Counter(
            "rkdsc_transmitter_links_closed",
            "Idle links closed to make room for a new one (RKDSC_TRANSMITTER_MAX_LINKS).",
            registry=registry,
        )
        self.config_version = Gauge(
            "rkdsc_transmitter_config_version",
            "Version of the length policy.",
            registry=registry,
        )
        self.snr_estimate_db = Gauge(
            "rkdsc_transmitter_snr_estimate_db",
            "The SNR the encoder is conditioned on per link (EWMA of receiver feedback) [dB].",
            ["link"],
            registry=registry,
        )
        self.policy_mode = Gauge(
            "rkdsc_transmitter_policy_mode",
            "1 for the active length-policy mode, 0 for the others.",
            ["mode"],
            registry=registry,
        )
        self.fixed_length = Gauge(
            "rkdsc_transmitter_fixed_length_symbols",
            "L of the fixed-mode policy.",
            registry=registry,
        )
        self.target_accuracy = Gauge(
            "rkdsc_transmitter_target_accuracy",
            "Accuracy target of the adaptive-mode policy, in [0, 1].",
            registry=registry,
        )
        self.policy_confidence = Gauge(
            "rkdsc_transmitter_policy_confidence",
            "One-sided confidence the adaptive-mode policy keeps that L reaches the target, "
            "in [0.5, 1) (0.5 = no margin).",
            registry=registry,
        )

    def set_policy(self, policy: LengthPolicy) -> None:
        """Publish the current policy."""
        for m in ("fixed", "adaptive"):
            self.policy_mode.labels(m).set(1.0 if m == policy.mode else 0.0)
        self.fixed_length.set(policy.fixed_length)
        self.target_accuracy.set(policy.target_accuracy)
        self.policy_confidence.set(policy.confidence)
        self.config_version.set(policy.version)
