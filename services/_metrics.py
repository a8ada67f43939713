"""Prometheus conventions shared by the services: SNR bins and the metrics HTTP server."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["LATENCY_BUCKETS", "SNR_BIN_DB", "snr_bin", "start_metrics_server"]

SNR_BIN_DB = 2.0
"""Width of the SNR bins used as metric labels [dB]."""

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0
)  # fmt: skip
"""Histogram buckets for per-stage and end-to-end latencies [s]: up to the emulator's
largest added delay (60 s), so quantiles of a slow link are not stuck at a lower bound."""


def snr_bin(snr_db: float) -> str:
    """The label of the 2 dB bin holding ``snr_db``: its centre, e.g. ``"10"`` for [9, 11).

    Never a raw float: labels stay bounded (-30..60 dB gives at most 46 values).
    """
    if not math.isfinite(snr_db):
        return "nan"
    centre = SNR_BIN_DB * math.floor(snr_db / SNR_BIN_DB + 0.5)
    return f"{centre:g}"


def start_metrics_server(port: int, registry: CollectorRegistry, host: str = "127.0.0.1") -> int:
    """Serve ``registry`` in Prometheus text format on ``http://host:port/metrics``.

    ``port=0`` picks a free port; the bound port is returned.
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
