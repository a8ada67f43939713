"""What one control-plane app holds: settings, clients, metrics, locks and the runs it started."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from services.control.clients import Clients
from services.control.metrics import ControlMetrics
from services.control.persist import ConfigStore
from services.control.schemas import RunPublic
from services.control.settings import Settings

__all__ = ["LOST_REASON", "ControlState", "RunBook"]

LOST_REASON = (
    "lost: the transmitter no longer knows this run (it restarted, or dropped the run from "
    "its history); the counts are the last ones read"
)
"""``error`` of a run the transmitter answers ``NOT_FOUND`` for (marked failed, not polled)."""


class RunBook:
    """The last known status of the runs started here, newest last, at most ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._runs: OrderedDict[str, RunPublic] = OrderedDict()

    def record(self, run: RunPublic) -> None:
        self._runs[run.run_id] = run
        self._runs.move_to_end(run.run_id)
        while len(self._runs) > self.capacity:
            self._runs.popitem(last=False)

    def update(self, run: RunPublic) -> None:
        """Refresh a run already recorded (runs started elsewhere are not added)."""
        if run.run_id in self._runs:
            self._runs[run.run_id] = run

    def get(self, run_id: str) -> RunPublic | None:
        """The last known status of ``run_id``; ``None`` if it was not started here."""
        return self._runs.get(run_id)

    def lose(self, run_id: str, reason: str = LOST_REASON) -> RunPublic | None:
        """Record that the transmitter no longer knows ``run_id`` (it answered ``NOT_FOUND``).

        An unfinished run ends ``failed`` with ``reason`` as its ``error`` and keeps its last
        counts; being done, it is not polled again. A finished run is kept as it is.

        Returns:
            The run's record after the change; ``None`` if it was not started here.
        """
        run = self._runs.get(run_id)
        if run is not None and not run.done:
            run = run.model_copy(update={"state": "failed", "done": True, "error": reason})
            self._runs[run_id] = run
        return run

    def all(self) -> list[RunPublic]:
        return list(self._runs.values())


@dataclass
class ControlState:
    """Per-app state, reachable from requests as ``request.app.state.control``."""

    settings: Settings
    metrics: ControlMetrics
    clients: Clients | None = None
    store: ConfigStore | None = None
    """Where applied configurations persist (``settings.state_file``); ``None``: nowhere."""
    runs: RunBook = field(init=False)
    channel_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    policy_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.runs = RunBook(self.settings.max_runs)
