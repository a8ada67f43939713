"""``python -m services.control``: serve the control plane with uvicorn."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from services.control.app import create_app
from services.control.settings import get_settings

__all__ = ["main"]


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Serve on ``RKDSC_CONTROL_HOST:RKDSC_CONTROL_PORT`` until SIGTERM/SIGINT, then exit 0.

    uvicorn shuts down gracefully on the signal and then re-raises it to the handler that
    was installed before it ran: this one, so a requested stop is a clean exit.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="asyncio",
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
