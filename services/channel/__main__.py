"""``python -m services.channel``: the channel emulator with its /metrics HTTP server."""

from __future__ import annotations

from services._main import run_service
from services.channel.server import serve
from services.channel.settings import Settings

__all__ = ["main"]


def main() -> None:
    """Read ``RKDSC_CHANNEL_*``, serve /metrics and gRPC until SIGTERM."""
    run_service("channel emulator", "RKDSC_CHANNEL_", Settings, serve)


if __name__ == "__main__":
    main()
