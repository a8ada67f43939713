"""The receiver service: CAT decoder and classifier head behind ``rkdsc.v1.Receiver``."""

from services.receiver.server import (
    FrameDecoder,
    ReceiverServer,
    ReceiverServicer,
    build_server,
    serve,
)
from services.receiver.settings import Settings

__all__ = [
    "FrameDecoder",
    "ReceiverServer",
    "ReceiverServicer",
    "Settings",
    "build_server",
    "serve",
]
