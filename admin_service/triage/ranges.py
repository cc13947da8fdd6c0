"""Time ranges in the stats time zone, cut into whole buckets (hour, day, week), right across
DST changes: a day is local midnight to local midnight (23 or 25 hours on a change day), an
hour is one hour of elapsed time starting at a local full hour. Boundaries are computed here,
once per request; rows are put into buckets by width_bucket() on them, so no row needs a time
zone conversion (as jobs/stats.py does for its days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from admin_service.errors import validation_error
from admin_service.jobs.schemas import Moment

BUCKETS = ("hour", "day", "week")
# Longest range per bucket (wall-clock time between from and to), and why: a chart has room
# for ~170 hourly points or ~90 daily ones; 366 days of weeks is a year at a glance (53 points).
MAX_RANGE = {"hour": timedelta(days=7), "day": timedelta(days=90), "week": timedelta(days=366)}
# When `from` is omitted: this long before `to`.
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30), "week": timedelta(weeks=26)}


@dataclass(frozen=True)
class Buckets:
    """bounds[0] .. bounds[-1]: n + 1 instants (UTC) delimiting n buckets, bucket k (1-based,
    as width_bucket counts) = [bounds[k-1], bounds[k])."""

    bucket: str
    tz: ZoneInfo
    bounds: tuple[datetime, ...]

    @property
    def start(self) -> datetime:
        return self.bounds[0]

    @property
    def end(self) -> datetime:
        return self.bounds[-1]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def label(self, k: int) -> str:
        """Bucket k as a person reads it: the local date (day, week: its Monday) or the local
        hour with its UTC offset (the repeated hour of a DST end differs by its offset)."""
        local = self.bounds[k - 1].astimezone(self.tz)
        if self.bucket == "hour":
            return local.isoformat(timespec="minutes")
        return local.date().isoformat()


def wall_clock(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def _floor(moment: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    if bucket == "hour":
        # astimezone sets `fold` for the repeated hour, and replace keeps it.
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())  # ISO weeks start on Monday
    return local_midnight(day, tz)


def _next(boundary: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    if bucket == "hour":
        return boundary + timedelta(hours=1)
    day = boundary.astimezone(tz).date() + timedelta(days=7 if bucket == "week" else 1)
    return local_midnight(day, tz)


def resolve_range(
    date_from: Moment | None,
    date_to: Moment | None,
    tz: ZoneInfo,
    now: datetime,
    span: timedelta,
    limit: timedelta,
    limit_name: str,
) -> tuple[datetime, datetime]:
    """The instants [start, end) a from/to pair means: a plain `to` date includes that whole
    day, a date-time `to` is included; `to` defaults to now, `from` to `span` before `to`.
    A reversed range or one longer than `limit` (wall-clock time) is a 400 naming `from`."""
    if date_to is None:
        end = now
    elif date_to.date_only:
        assert isinstance(date_to.value, date)
        if date_to.value >= date.max - timedelta(days=1):
            raise validation_error("to", "Must be a date before 9999-12-30.")
        end = local_midnight(date_to.value + timedelta(days=1), tz)
    else:
        end = date_to.start(tz) + timedelta(microseconds=1)
    start = date_from.start(tz) if date_from is not None else end - span
    if start.year < 2 or end.year > 9998:
        raise validation_error("from", "The range must lie between the years 2 and 9998.")
    if start >= end:
        raise validation_error("from", "from must not be after to.")
    if wall_clock(end, tz) - wall_clock(start, tz) > limit + timedelta(microseconds=1):
        days = limit.days
        raise validation_error("from", f"The range from..to is longer than {days} days, the limit {limit_name}.")
    return start, end


def cut(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> Buckets:
    """Whole buckets covering [start, end): from the bucket holding `start` to the one holding
    the range's last instant."""
    bounds = [_floor(start, bucket, tz)]
    while bounds[-1] < end:
        bounds.append(_next(bounds[-1], bucket, tz))
    return Buckets(bucket, tz, tuple(bounds))
