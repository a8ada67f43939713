"""The one exception the data module raises for a missing, unreadable or malformed source."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rkdsc_core.data.specs import DatasetSpec

__all__ = ["DataSourceError", "source_error"]


class DataSourceError(ValueError):
    """A dataset source is missing, truncated, corrupt or laid out unexpectedly.

    The message says what was wrong, what was expected and where to get it.
    """


def source_error(spec: DatasetSpec, problem: str) -> DataSourceError:
    """Build a :class:`DataSourceError` from ``problem`` plus ``spec``'s expected sources."""
    return DataSourceError(f"{problem}: {spec.source_help()}")
