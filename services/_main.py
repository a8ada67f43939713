"""The entry point shared by the gRPC services: settings, logging, /metrics, serve."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rkdsc_core.checkpoint import CheckpointError
from services._metrics import start_metrics_server

__all__ = ["StartupError", "load_settings", "run_service"]


class StartupError(Exception):
    """A service cannot start as configured (a message for the operator, not a bug):
    :func:`run_service` prints it and exits 2."""


def load_settings(name: str, env_prefix: str, settings_factory: Callable[[], Any]) -> Any:
    """``settings_factory()``, or exit 2 naming the invalid fields (no traceback)."""
    try:
        return settings_factory()
    except ValidationError as e:  # the fields and why, never their values (a token is one)
        lines = "\n".join(
            f"  {'.'.join(map(str, err['loc'])) or '(settings)'}: {err['msg']}"
            for err in e.errors(include_input=False)
        )
        sys.stderr.write(f"error: invalid {name} settings ({env_prefix}*):\n{lines}\n")
        raise SystemExit(2) from None


def run_service(
    name: str,
    env_prefix: str,
    settings_factory: Callable[[], Any],
    serve: Callable[[Any, CollectorRegistry], Coroutine[Any, Any, None]],
) -> None:
    """Validate the settings (exit 2 naming the field), log, serve /metrics, run until SIGTERM.

    ``settings_factory()`` returns the service's settings (with ``host``, ``metrics_port``
    and optionally ``log_level``); ``serve(settings, registry)`` runs the gRPC server.

    Missing weights (``FileNotFoundError``), unreadable, truncated or tampered ones
    (``CheckpointError``, naming the file) and settings that do not fit them
    (:class:`StartupError`) also exit 2 with the reason, not a traceback.
    """
    settings = load_settings(name, env_prefix, settings_factory)
    level = getattr(settings, "log_level", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = CollectorRegistry()
    port = start_metrics_server(settings.metrics_port, registry, host=settings.host)
    logging.getLogger(f"services.{name}").info(
        "metrics on http://%s:%d/metrics", settings.host, port
    )
    try:
        asyncio.run(serve(settings, registry))
    except (FileNotFoundError, CheckpointError, StartupError) as e:
        sys.stderr.write(f"error: {name} cannot start: {e}\n")
        raise SystemExit(2) from None
