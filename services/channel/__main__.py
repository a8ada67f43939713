"""Entry point: ``python -m services.channel`` (settings from ``RKDSC_CHANNEL_*``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services._metrics import start_metrics_server
from services.channel.server import serve
from services.channel.settings import Settings

__all__ = ["main"]

log = logging.getLogger("services.channel")


def main() -> None:
    """Validate the settings (fail fast), start /metrics, serve until SIGTERM."""
    try:
        settings = Settings()
    except ValidationError as e:
        sys.stderr.write(f"error: invalid channel emulator settings (RKDSC_CHANNEL_*):\n{e}\n")
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = CollectorRegistry()
    port = start_metrics_server(settings.metrics_port, registry, host=settings.host)
    log.info("metrics on http://%s:%d/metrics", settings.host, port)
    asyncio.run(serve(settings, registry))


if __name__ == "__main__":
    main()
