"""The control plane's REST API: routers and their dependencies."""

from services.control.api.main import api_router

__all__ = ["api_router"]
