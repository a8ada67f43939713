"""``python -m services.receiver``: the receiver with its /metrics HTTP server."""

from __future__ import annotations

from services._main import run_service
from services.receiver.server import serve
from services.receiver.settings import Settings

__all__ = ["main"]


def main() -> None:
    """Read ``RKDSC_RECEIVER_*``, serve /metrics and gRPC until SIGTERM."""
    run_service("receiver", "RKDSC_RECEIVER_", Settings, serve)


if __name__ == "__main__":
    main()
