"""The RKD-SC transmitter service: images in, CAT symbol frames out, results back."""

from services.transmitter.server import build_server, serve
from services.transmitter.settings import Settings, get_settings

__all__ = ["Settings", "build_server", "get_settings", "serve"]
