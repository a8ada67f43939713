"""``python -m services.transmitter``: the transmitter with its /metrics HTTP server."""

from __future__ import annotations

from services._main import run_service
from services.transmitter.server import serve
from services.transmitter.settings import get_settings

__all__ = ["main"]


def main() -> None:
    """Read ``RKDSC_TRANSMITTER_*``, serve /metrics and gRPC until SIGTERM."""
    run_service("transmitter", "RKDSC_TRANSMITTER_", get_settings, serve)


if __name__ == "__main__":
    main()
