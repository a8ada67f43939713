"""The configuration set through the control plane, kept in SQLite and restored after restarts.

Every successful ``PUT /v1/channel`` and ``PUT /v1/transmitter`` stores the complete
configuration it applied together with the version the service answered. The services
number their configurations from 1 at start, so a service reporting a *lower* version than
the stored one has restarted and lost what was set: :func:`restore_once` applies the stored
configuration again (and stores the new version). A configuration changed directly over gRPC
(a higher version) is left alone. With the file on a volume, a restarted control plane
restores too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc

from services.control._convert import (
    channel_public,
    channel_settings_message,
    policy_message,
    transmitter_public,
)
from services.control.clients import ServiceError
from services.control.schemas import ChannelConfig

if TYPE_CHECKING:
    from services.control.state import ControlState

__all__ = [
    "ConfigStore",
    "StoredConfig",
    "Target",
    "remember",
    "restore_loop",
    "restore_once",
]

log = logging.getLogger(__name__)

Target = Literal["channel", "transmitter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config (
    target TEXT PRIMARY KEY,      -- channel | transmitter
    body TEXT NOT NULL,           -- the complete configuration, JSON
    version INTEGER NOT NULL,     -- the service's config version after applying it
    updated_unix REAL NOT NULL    -- when it was stored [s since the Unix epoch]
)
"""


@dataclass(frozen=True)
class StoredConfig:
    """One stored configuration: ``body`` as the REST API spells it, the version it got."""

    target: Target
    body: dict[str, Any]
    version: int
    updated_unix: float


class ConfigStore:
    """A SQLite file holding the last configuration applied to each service.

    Each call opens its own short connection (safe from any thread; the file may be shared
    by a restarted process). Writes are atomic (one transaction).

    Args:
        path: the database file; its folder is created.

    Raises:
        sqlite3.DatabaseError: ``path`` exists and is not a SQLite database.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0)

    def put(self, target: Target, body: dict[str, Any], version: int) -> None:
        """Store ``body`` (JSON-serialisable) as ``target``'s configuration at ``version``."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO config (target, body, version, updated_unix) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET body = excluded.body, "
                "version = excluded.version, updated_unix = excluded.updated_unix",
                (target, json.dumps(body, sort_keys=True), int(version), time.time()),
            )

    def delete(self, target: Target) -> None:
        """Forget ``target``'s stored configuration (no error if there is none)."""
        with self._connect() as db:
            db.execute("DELETE FROM config WHERE target = ?", (target,))

    def get(self, target: Target) -> StoredConfig | None:
        """``target``'s stored configuration, if any."""
        with self._connect() as db:
            row = db.execute(
                "SELECT body, version, updated_unix FROM config WHERE target = ?", (target,)
            ).fetchone()
        if row is None:
            return None
        return StoredConfig(target, json.loads(row[0]), int(row[1]), float(row[2]))


async def remember(state: ControlState, target: Target, body: dict[str, Any], version: int) -> None:
    """Store an applied configuration, if the control plane persists (``state_file`` set).

    A failure to write is logged, not raised: the change itself has been applied.
    """
    if state.store is None:
        return
    try:
        await asyncio.to_thread(state.store.put, target, body, version)
    except (sqlite3.Error, OSError) as err:
        log.error("could not store the %s configuration in %s: %s", target, state.store.path, err)


async def restore_once(state: ControlState) -> list[Target]:
    """Re-apply each stored configuration whose service has restarted since; which ones.

    A service that does not answer is skipped (tried again next time).
    """
    store, clients = state.store, state.clients
    if store is None or clients is None:
        return []
    restored: list[Target] = []
    for target in ("channel", "transmitter"):
        stored = await asyncio.to_thread(store.get, target)
        if stored is None:
            continue
        lock = state.channel_lock if target == "channel" else state.policy_lock
        try:
            async with lock:  # the store too: a REST update must not be overwritten by this
                version = await _restore(state, stored)
        except ServiceError as err:
            log.debug("cannot check the %s configuration now: %s", target, err)
            continue
        if version is not None:
            restored.append(target)
    return restored


async def restore_locked(state: ControlState, target: Target) -> None:
    """Re-apply ``target``'s stored configuration if its service restarted since.

    For a REST update, which holds ``target``'s lock: it checks this first, so it merges
    onto the stored configuration, not onto a restarted service's defaults.

    Raises:
        ServiceError: the service did not answer.
    """
    if state.store is None or state.clients is None:
        return
    stored = await asyncio.to_thread(state.store.get, target)
    if stored is not None:
        await _restore(state, stored)


async def _restore(state: ControlState, stored: StoredConfig) -> int | None:
    """Apply ``stored`` if its service reports an older version, count it and store the
    version it got; that version, if so (call it holding the target's lock).

    A configuration the restarted service refuses (``INVALID_ARGUMENT``,
    ``FAILED_PRECONDITION``, ``OUT_OF_RANGE``) or that cannot be read is discarded with a
    warning and counted (``rkdsc_control_config_restores_rejected_total``): returns ``None``.

    Raises:
        ServiceError: the service did not answer (try again later).
    """
    try:
        version = await _apply_if_restarted(state, stored)
    except ServiceError as err:
        if err.code not in _REJECTED:
            raise
        reason = f"{err.code.name}: {err.message}"
    except ValueError as err:  # a body this version cannot read (pydantic's errors too)
        reason = f"unreadable: {err}"
    else:
        if version is not None:
            state.metrics.config_restores.labels(stored.target).inc()
            await remember(state, stored.target, stored.body, version)
        return version
    # The restarted service refuses what was stored (new weights, other lengths, ...): forget
    # it, so that REST updates apply to the service's own configuration from now on.
    log.warning(
        "the restarted %s rejects the stored configuration %s (%s); discarded",
        stored.target,
        stored.body,
        reason,
    )
    state.metrics.config_restores_rejected.labels(stored.target).inc()
    if state.store is not None:
        await asyncio.to_thread(state.store.delete, stored.target)
    return None


_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
"""Status codes by which a service refuses a configuration (others: try again later)."""


async def _apply_if_restarted(state: ControlState, stored: StoredConfig) -> int | None:
    clients = state.clients
    assert clients is not None
    body = stored.body
    if stored.target == "channel":
        current = channel_public(await clients.channel.get_settings()).version
        if current >= stored.version:
            return None
        message = channel_settings_message(ChannelConfig.model_validate(body))
        version = channel_public(await clients.channel.set_settings(message)).version
    else:
        current = transmitter_public(await clients.transmitter.get_policy()).version
        if current >= stored.version:
            return None
        # A body stored before the policy had a confidence keeps the transmitter's.
        message = policy_message(body)
        version = transmitter_public(await clients.transmitter.set_policy(message)).version
    log.warning(
        "%s restarted (config v%d < stored v%d): restored %s as v%d",
        stored.target,
        current,
        stored.version,
        body,
        version,
    )
    return version


async def restore_loop(state: ControlState, interval: float) -> None:
    """:func:`restore_once` now and every ``interval`` seconds, until cancelled."""
    while True:
        try:
            await restore_once(state)
        except Exception:  # never let the loop die; the next round tries again
            log.exception("restoring the stored configuration failed")
        await asyncio.sleep(interval)
