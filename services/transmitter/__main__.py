"""``python -m services.transmitter``: the transmitter with its /metrics HTTP server."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from services._metrics import start_metrics_server
from services.transmitter.server import serve
from services.transmitter.settings import get_settings

__all__ = ["main"]

log = logging.getLogger("services.transmitter")


def main() -> None:
    """Read ``RKDSC_TRANSMITTER_*``, serve /metrics and gRPC until SIGTERM."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    registry = CollectorRegistry()
    port = start_metrics_server(settings.metrics_port, registry, host=settings.host)
    log.info("metrics on http://%s:%d/metrics", settings.host, port)
    asyncio.run(serve(settings, registry))


if __name__ == "__main__":
    main()
