"""Frame expiry helpers shared by the hops."""

from __future__ import annotations

import time

from services._deadline import expiry_after, overdue_error, seconds_left
from services.pb import frame_pb2


def test_a_frame_without_expiry_never_expires() -> None:
    frame = frame_pb2.SymbolFrame()
    assert seconds_left(frame) is None
    assert overdue_error(frame, "before the receiver reached it") is None


def test_a_live_frame_has_its_seconds_left() -> None:
    frame = frame_pb2.SymbolFrame(expires_unix_ns=expiry_after(5.0))
    left = seconds_left(frame)
    assert left is not None and 4.0 < left <= 5.0
    assert overdue_error(frame, "before the receiver reached it") is None


def test_an_expired_frame_names_the_hop_and_how_late() -> None:
    frame = frame_pb2.SymbolFrame(expires_unix_ns=time.time_ns() - 2 * 10**9)
    error = overdue_error(frame, "before the channel emulator reached it")
    assert error is not None
    assert error.startswith(
        "DEADLINE_EXCEEDED: the frame expired before the channel emulator reached it, 2.0"
    )


def test_negative_budgets_expire_at_once() -> None:
    frame = frame_pb2.SymbolFrame(expires_unix_ns=expiry_after(-1.0))
    assert overdue_error(frame, "before the receiver reached it") is not None
