"""Time as the service writes it: every timestamp it emits is UTC ISO-8601 with milliseconds
and `Z`; database values without a zone are UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(dt: datetime) -> datetime:
    """A datetime with a zone: naive values (timestamp without time zone columns) are UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(dt: datetime | None) -> str | None:
    """UTC ISO-8601 with milliseconds and `Z`, like every other timestamp the service emits."""
    if dt is None:
        return None
    return utc(dt).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def full_precision(dt: datetime) -> str:
    """Full-precision UTC time (microseconds, offset), whatever the session time zone: for keys."""
    return dt.astimezone(UTC).isoformat()
