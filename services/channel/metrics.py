"""Prometheus metrics of the channel emulator, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services._metrics import LATENCY_BUCKETS

__all__ = ["FATES", "SYMBOL_BUCKETS", "ChannelMetrics"]

FATES = ("forwarded", "lost", "error")
"""What the emulator did with a frame: relayed the receiver's result, dropped it, or failed it."""

SYMBOL_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Histogram buckets for symbols per frame ``L``."""


class ChannelMetrics:
    """The emulator's metrics; names follow ``rkdsc_channel_<what>_<unit>``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames = Counter(
            "rkdsc_channel_frames",
            "Frames answered, by fate: forwarded (result relayed from the receiver), "
            "lost (dropped by the channel) or error (rejected, or the receiver failed).",
            ["fate"],
            registry=registry,
        )
        for fate in FATES:
            self.frames.labels(fate)
        self.frames_expired = Counter(
            "rkdsc_channel_frames_expired",
            "Frames answered DEADLINE_EXCEEDED and never forwarded, because their expiry "
            "(expires_unix_ns) passed before they left: on arrival (then not impaired either), "
            "during the added delay or while the receiver was unreachable (also in "
            "frames{fate=error}).",
            registry=registry,
        )
        self.symbols_per_frame = Histogram(
            "rkdsc_channel_symbols_per_frame",
            "Data symbols L per valid frame.",
            buckets=SYMBOL_BUCKETS,
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "rkdsc_channel_processing_seconds",
            "Time to validate and impair one frame, the added delay excluded [s].",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "rkdsc_channel_queue_depth",
            "Frames read from transmitters and not yet answered (all streams).",
            registry=registry,
        )
        self.config_version = Gauge(
            "rkdsc_channel_config_version",
            "Version of the channel config in force.",
            registry=registry,
        )
        self.snr_db = Gauge(
            "rkdsc_channel_snr_db",
            "Configured Es/N0 [dB].",
            registry=registry,
        )
        self.config_changes = Counter(
            "rkdsc_channel_config_changes",
            "Accepted SetSettings calls.",
            registry=registry,
        )
