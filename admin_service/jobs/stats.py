"""Job statistics: computed in a few index-friendly queries on parallel connections, once per
interval per process, and shared by the REST endpoint and every live subscriber."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from admin_service.config import Settings
from admin_service.db.tables import JOBS_TABLE, METRICS_TABLE
from admin_service.jobs.status import STATUSES, normalize, sql_list, stored_values

log = logging.getLogger("admin_service.stats")

# Exact counts in two cheap passes instead of one GROUP BY over every row (a parallel seq or
# index scan that feeds each row to a hash aggregate): the total, an index-only count over the
# smallest index, and the statuses other than the dominant `completed`, each an index-only range
# scan over a few percent of the index. completed = total - the others - NULL statuses.
STATUS_COUNTS = text(
    f"""
    SELECT 'total' AS kind, NULL AS status, count(*) AS n FROM {JOBS_TABLE}
    UNION ALL
    SELECT 'status', status, count(*) FROM {JOBS_TABLE} WHERE status < 'completed' GROUP BY status
    UNION ALL
    SELECT 'status', status, count(*) FROM {JOBS_TABLE} WHERE status > 'completed' GROUP BY status
    UNION ALL
    SELECT 'null', NULL, count(*) FROM {JOBS_TABLE} WHERE status IS NULL
    """
)

# Days are buckets between local midnights computed in Python (right across DST changes), so
# no row needs a time-zone conversion.
DAILY = text(
    f"""
    SELECT width_bucket(created_at, CAST(:bounds AS timestamptz[])) AS bucket,
           count(*) AS total,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM {JOBS_TABLE}
    WHERE created_at >= :since
    GROUP BY 1
    """
)

# Processing time: completed_at - processing_started_at (created_at when a writer never set it).
# Queue wait: processing_started_at - created_at. Both over jobs created in the window, as
# float8 seconds (extract() is numeric since PostgreSQL 14: several times slower to sort).
PERFORMANCE = text(
    f"""
    SELECT count(pt) AS n,
           avg(pt) AS pt_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY pt) AS pt_pct,
           avg(qw) AS qw_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY qw) AS qw_pct
    FROM (
        SELECT CASE WHEN status = 'completed' AND completed_at IS NOT NULL
                    THEN date_part('epoch', completed_at - COALESCE(processing_started_at, created_at)) END AS pt,
               CASE WHEN processing_started_at IS NOT NULL
                    THEN date_part('epoch', processing_started_at - created_at) END AS qw
        FROM {JOBS_TABLE}
        WHERE created_at >= :since
    ) AS sample
    """
)

# FILTER keeps the planner from turning min() into "walk the created_at index until a queued
# row turns up", which reads nearly the whole index when the queued jobs are the newest ones.
OLDEST_QUEUED = text(
    f"SELECT min(created_at) FILTER (WHERE true) FROM {JOBS_TABLE} WHERE status IN ({sql_list(stored_values(['queued']))})"
)

TABLE_ROWS_ESTIMATE = text(f"SELECT reltuples::bigint FROM pg_class WHERE oid = '{JOBS_TABLE}'::regclass")

# Newest row of each metric (the old service let older rows overwrite newer ones): a hash
# aggregate and a join, not a sort of the whole table by name.
RESOURCES = text(
    f"""
    SELECT m.metric_name, m.metric_value, m.metric_data, m.recorded_at
    FROM {METRICS_TABLE} AS m
    JOIN (SELECT metric_name, max(recorded_at) AS newest FROM {METRICS_TABLE} GROUP BY metric_name) AS n
      ON n.metric_name = m.metric_name AND n.newest = m.recorded_at
    ORDER BY m.metric_name, m.id
    """
)


def _num(value: Any, digits: int = 2) -> float | None:
    if value is None:
        return None
    return round(float(value), digits)


def _percentiles(avg: Any, pct: list[Any] | None) -> dict[str, float | None]:
    pct = pct or [None, None, None]
    return {"avg": _num(avg), "p50": _num(pct[0]), "p95": _num(pct[1]), "p99": _num(pct[2])}


def day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, dtime.min, tzinfo=tz)


def _status_counts(conn: Connection) -> tuple[dict[str, int], int]:
    counts = {name: 0 for name in STATUSES}
    total = others = 0
    for kind, status, n in conn.execute(STATUS_COUNTS):
        if kind == "total":
            total = n
            continue
        others += n
        name = normalize(status)
        if kind == "status" and name in counts:
            counts[name] += n
    counts["completed"] = total - others
    return counts, total


def _daily(conn: Connection, settings: Settings, first_day: date) -> dict[date, dict[str, int]]:
    tz = settings.tz
    bounds = [day_start(first_day + timedelta(days=i), tz) for i in range(8)]
    days = {first_day + timedelta(days=i): {"total": 0, "completed": 0, "failed": 0, "cancelled": 0} for i in range(7)}
    for row in conn.execute(DAILY, {"bounds": bounds, "since": bounds[0]}).mappings():
        if 1 <= row["bucket"] <= 7:
            days[first_day + timedelta(days=row["bucket"] - 1)] = {
                k: int(row[k]) for k in ("total", "completed", "failed", "cancelled")
            }
    return days


def _performance(conn: Connection, window_start: datetime) -> dict[str, Any]:
    perf = dict(conn.execute(PERFORMANCE, {"since": window_start}).mappings().one())
    perf["oldest_queued"] = conn.execute(OLDEST_QUEUED).scalar()
    perf["resources"] = {
        row["metric_name"]: {
            "value": float(row["metric_value"]) if isinstance(row["metric_value"], Decimal) else row["metric_value"],
            "data": row["metric_data"],
            # recorded_at is stored without a zone, in UTC.
            "recorded_at": row["recorded_at"].replace(tzinfo=UTC),
        }
        for row in conn.execute(RESOURCES).mappings()
    }
    return perf


def _in_parallel(engine: Engine, *calls: Callable[[Connection], Any]) -> list[Any]:
    """Each call on a connection of its own, at the same time (threads; greenlets under gevent,
    where db/green.py makes psycopg2 cooperative). The counts and the per-day figures read
    different indexes: run together they take the time of the slower one, not the sum."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with engine.connect() as conn:
                results[i] = calls[i](conn)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"stats-{i}", daemon=True) for i in range(1, len(calls))]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def compute_stats(
    conn: Connection | None, settings: Settings, now: datetime | None = None, *, engine: Engine | None = None
) -> dict[str, Any]:
    """The figures, on `conn` one query after another, or with `engine` on parallel connections."""
    tz = settings.tz
    now = now or datetime.now(UTC)
    today = now.astimezone(tz).date()
    first_day = today - timedelta(days=6)
    window_start = now - timedelta(hours=settings.performance_window_hours)

    parts: list[Callable[[Connection], Any]] = [
        _status_counts,
        lambda c: _daily(c, settings, first_day),
        lambda c: _performance(c, window_start),
    ]
    if engine is not None:
        (counts, total), days, perf = _in_parallel(engine, *parts)
    else:
        assert conn is not None
        (counts, total), days, perf = (part(conn) for part in parts)

    daily = [{"date": d.isoformat(), **v} for d, v in sorted(days.items())]
    avg_seconds = float(perf["pt_avg"]) if perf["pt_avg"] is not None else None
    avg_minutes = f"{(avg_seconds or 0) / 60:.2f}"
    oldest = perf["oldest_queued"]
    resources = perf["resources"]

    finished = counts["completed"] + counts["failed"]
    today_row = days[today]
    return {
        "overview": {
            "total": total,
            **counts,
            "successRate": round(100.0 * counts["completed"] / finished, 2) if finished else 0.0,
            "avgProcessingTimeMinutes": avg_minutes,
        },
        "today": {
            "date": today.isoformat(),
            "timezone": settings.stats_timezone,
            "total": today_row["total"],
            "completed": today_row["completed"],
            "failed": today_row["failed"],
        },
        "performance": {
            "window": {
                "hours": settings.performance_window_hours,
                "start": window_start,
                "end": now,
                "basis": "jobs created in the window",
            },
            "sampleSize": int(perf["n"]),
            "avgProcessingTimeSeconds": round(avg_seconds) if avg_seconds is not None else None,
            "avgProcessingTimeMinutes": avg_minutes,
            "processingTimeSeconds": _percentiles(perf["pt_avg"], perf["pt_pct"]),
            "queueWaitSeconds": _percentiles(perf["qw_avg"], perf["qw_pct"]),
            "oldestQueuedJobAgeSeconds": _num((now - oldest).total_seconds()) if oldest else None,
            "oldestQueuedJobCreatedAt": oldest,
        },
        "dailyMetrics": daily,
        "resourceUtilization": resources,
        "computedAt": now,
    }


# Share of the interval after which a request starts a background recomputation.
REFRESH_AHEAD = 0.85


class SharedStats:
    """The figures of one process, recomputed at most once per interval.

    Concurrent callers that find them stale wait for one computation instead of each
    running the queries (the old service ran 7 queries per request and per dashboard).
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._computed_monotonic = 0.0
        self._rows: int | None = None
        self._rows_read: float | None = None

    def table_rows(self, conn: Connection) -> int | None:
        """The planner's row count of the jobs table (pg_class.reltuples), re-read once per interval:
        tells whether counting is cheap before any figures were computed."""
        now = time.monotonic()
        if self._rows_read is None or (now - self._rows_read) * 1000 >= self.settings.job_stats_interval_ms:
            self._rows = conn.execute(TABLE_ROWS_ESTIMATE).scalar()
            self._rows_read = now
        return self._rows

    def peek(self) -> dict[str, Any] | None:
        """The current figures, however old, without computing any (None before the first)."""
        return self._value

    def age_ms(self) -> float | None:
        if self._value is None:
            return None
        return (time.monotonic() - self._computed_monotonic) * 1000

    def get(self, max_age_ms: float | None = None) -> tuple[dict[str, Any], float]:
        """Figures no older than max_age_ms (default: the stats interval) and their age in ms.

        With the default limit, figures past REFRESH_AHEAD of their interval are recomputed in
        the background while the current ones are served: under steady use no request waits
        for a computation (a request that finds them past the interval still waits)."""
        limit = self.settings.job_stats_interval_ms if max_age_ms is None else max_age_ms
        age = self.age_ms()
        if self._value is not None and age is not None and age < limit:
            if max_age_ms is None and age >= limit * REFRESH_AHEAD and not self._lock.locked():
                threading.Thread(target=self._refresh_in_background, name="stats-refresh", daemon=True).start()
            return self._value, age
        started = time.monotonic()
        with self._lock:
            # Someone else may have refreshed while we waited for the lock: figures young
            # enough, or (for max_age_ms=0) whose computation began after this call did.
            age = self.age_ms()
            if self._value is not None and age is not None and (age < limit or self._computed_monotonic >= started):
                return self._value, age
            self._compute()
            return self._value, 0.0  # type: ignore[return-value]

    def _compute(self) -> None:
        started = time.monotonic()
        self._value = compute_stats(None, self.settings, engine=self.engine)
        # Aged from when the queries started: the figures are at least that old.
        self._computed_monotonic = started

    def _refresh_in_background(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # a refresh is already running
        try:
            age = self.age_ms()
            if age is None or age >= self.settings.job_stats_interval_ms * REFRESH_AHEAD:
                self._compute()
        except Exception as exc:  # the next request computes (and reports) it in the foreground
            log.warning("background stats refresh failed: %s", type(exc).__name__)
        finally:
            self._lock.release()
