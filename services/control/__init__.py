"""The control plane: a FastAPI REST API over the services' gRPC calls (``create_app``)."""

from services.control.app import create_app
from services.control.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
