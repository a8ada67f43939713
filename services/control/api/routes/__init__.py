"""One router per REST resource."""

__all__: list[str] = []
