"""Job status vocabulary. Older writers say `queue` for `queued`: read both, emit `queued`."""

from __future__ import annotations

from collections.abc import Iterable

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
ALIASES = {"queue": "queued"}
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def normalize(status: str | None) -> str | None:
    if status is None:
        return None
    return ALIASES.get(status, status)


def stored_values(statuses: Iterable[str]) -> list[str]:
    """Every value a status may be stored as, for `status IN (...)` filters."""
    values: list[str] = []
    for status in statuses:
        values.append(status)
        values.extend(alias for alias, canonical in ALIASES.items() if canonical == status)
    return values
