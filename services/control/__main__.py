"""``python -m services.control``: serve the control plane with uvicorn."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn

from services._main import load_settings
from services.control.app import create_app
from services.control.settings import get_settings

__all__ = ["main"]


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Serve on ``RKDSC_CONTROL_HOST:RKDSC_CONTROL_PORT`` until SIGTERM/SIGINT, then exit 0.

    uvicorn shuts down gracefully on the signal and then re-raises it to the handler that
    was installed before it ran: this one, so a requested stop is a clean exit.

    As the gRPC services (``services._main.run_service``): invalid settings exit 2 naming
    the field, and an unusable ``state_file`` exits 2 with the reason, not a traceback.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings("control plane", "RKDSC_CONTROL_", get_settings)
    try:
        app = create_app(settings)
    except ValueError as e:  # the state file cannot be opened (create_app names it)
        sys.stderr.write(f"error: control plane cannot start: {e}\n")
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
