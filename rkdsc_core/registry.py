"""A name -> factory registry for models (teachers, students, codecs), in the style of timm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator: make ``fn(**kwargs) -> nn.Module`` creatable as ``create_model(name)``."""

    def deco(fn: _F) -> _F:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    _import_zoo()
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model registered as ``name``; ``None`` overrides keep the default."""
    _import_zoo()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    return _REGISTRY[name](**kwargs)


def _import_zoo() -> None:
    # Importing the package runs every @register_model in it.
    import rkdsc_core.models  # noqa: F401
