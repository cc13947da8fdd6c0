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


class NotAnInstant(ValueError):
    """Text that is not an instant the service can hold; the message says why (for a 400).
    `malformed`: not ISO-8601 at all (a field that also takes other forms says so its own way)."""

    def __init__(self, message: str, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date-time as clients and cursors write it, as an aware datetime in UTC.

    The one reader of instants that reach a statement (date_from/date_to, cursors). The value
    is sent to PostgreSQL in UTC: PostgreSQL refuses offsets beyond +-15:59 that RFC 3339 allows
    (up to +-23:59), so converting here is what lets every offset mean what it says. An instant
    just outside Python's range once in UTC (9999-12-31T23:00-05:00) is the nearest one inside
    it: no value the service reads lies between the two, so comparisons answer the same.
    Refused, with NotAnInstant: what fromisoformat does not read, and an offset that is not
    whole minutes (ISO 8601 has none; PostgreSQL cannot read fractional ones). Naive is UTC.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise NotAnInstant("Not a valid ISO-8601 date-time.", malformed=True) from None
    offset = parsed.utcoffset()
    if offset is None:
        return parsed.replace(tzinfo=UTC)
    if offset.seconds % 60 or offset.microseconds:
        raise NotAnInstant("The time-zone offset must be whole minutes (+hh:mm).")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # only within a day of either end: the year says which
        return (datetime.max if parsed.year == datetime.max.year else datetime.min).replace(tzinfo=UTC)
