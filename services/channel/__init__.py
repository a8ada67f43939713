"""The channel emulator service: impairs symbol frames and relays the receiver's results."""

from services.channel.server import (
    ChannelEmulatorServicer,
    ChannelServer,
    build_server,
    serve,
)
from services.channel.settings import ChannelParams, Settings

__all__ = [
    "ChannelEmulatorServicer",
    "ChannelParams",
    "ChannelServer",
    "Settings",
    "build_server",
    "serve",
]
