"""Frame deadlines across hops: ``SymbolFrame.expires_unix_ns``, set once, honoured by all.

The transmitter stamps each frame with the wall-clock time after which nobody waits for its
result. The channel emulator and the receiver check it when a frame's turn comes and answer
a frame that is already past it ``DEADLINE_EXCEEDED`` without impairing or decoding it, so
a hop that falls behind spends its time on frames that can still be answered. Wall-clock
time crosses hosts (a monotonic clock does not), so hosts are assumed NTP-synchronised.
"""

from __future__ import annotations

import time

from services.pb import frame_pb2

__all__ = ["expired_error", "expiry_after", "overdue_error", "seconds_left"]


def expiry_after(seconds: float) -> int:
    """The ``expires_unix_ns`` of a frame whose result is waited for ``seconds`` from now."""
    return time.time_ns() + max(0, round(seconds * 1e9))


def seconds_left(frame: frame_pb2.SymbolFrame) -> float | None:
    """Seconds until ``frame`` expires (negative: past it); ``None`` if it never expires."""
    if frame.expires_unix_ns == 0:
        return None
    return (frame.expires_unix_ns - time.time_ns()) / 1e9


def overdue_error(frame: frame_pb2.SymbolFrame, where: str) -> str | None:
    """The :func:`expired_error` of ``frame`` if it has expired, else ``None``."""
    left = seconds_left(frame)
    if left is None or left > 0:
        return None
    return expired_error(where, -left)


def expired_error(where: str, late_seconds: float = 0.0) -> str:
    """``DEADLINE_EXCEEDED: the frame expired <where>, <late> s ago; ...``.

    ``where``: e.g. ``"before the receiver reached it"``.
    """
    return (
        f"DEADLINE_EXCEEDED: the frame expired {where}, {late_seconds:.3f} s ago; "
        "nobody waits for its result"
    )
