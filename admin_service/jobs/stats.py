"""Job statistics: computed in five index-friendly queries, once per interval per process,
and shared by the REST endpoint and every live subscriber."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from admin_service.config import Settings
from admin_service.jobs.status import ALIASES, STATUSES

STATUS_COUNTS = text("SELECT status, count(*) AS n FROM archive.analysis_jobs GROUP BY status")

DAILY = text(
    """
    SELECT (created_at AT TIME ZONE :tz)::date AS day,
           count(*) AS total,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM archive.analysis_jobs
    WHERE created_at >= :since
    GROUP BY 1
    """
)

# Processing time: completed_at - processing_started_at (created_at when a writer never set it).
# Queue wait: processing_started_at - created_at. Both over jobs created in the window.
PERFORMANCE = text(
    """
    SELECT count(pt) AS n,
           avg(pt) AS pt_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY pt) AS pt_pct,
           avg(qw) AS qw_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY qw) AS qw_pct,
           (SELECT min(created_at) FROM archive.analysis_jobs WHERE status IN ('queued', 'queue')) AS oldest_queued
    FROM (
        SELECT CASE WHEN status = 'completed' AND completed_at IS NOT NULL
                    THEN extract(epoch FROM completed_at - COALESCE(processing_started_at, created_at)) END AS pt,
               CASE WHEN processing_started_at IS NOT NULL
                    THEN extract(epoch FROM processing_started_at - created_at) END AS qw
        FROM archive.analysis_jobs
        WHERE created_at >= :since
    ) AS sample
    """
)

# Newest row of each metric (the old service let older rows overwrite newer ones).
RESOURCES = text(
    """
    SELECT DISTINCT ON (metric_name) metric_name, metric_value, metric_data, recorded_at
    FROM archive.system_metrics
    ORDER BY metric_name, recorded_at DESC
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


def compute_stats(conn: Connection, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    tz = settings.tz
    now = now or datetime.now(UTC)
    today = now.astimezone(tz).date()
    first_day = today - timedelta(days=6)
    window_start = now - timedelta(hours=settings.performance_window_hours)

    counts = {name: 0 for name in STATUSES}
    total = 0
    for status, n in conn.execute(STATUS_COUNTS):
        total += n
        name = ALIASES.get(status, status)
        if name in counts:
            counts[name] += n

    days = {first_day + timedelta(days=i): {"total": 0, "completed": 0, "failed": 0, "cancelled": 0} for i in range(7)}
    for row in conn.execute(DAILY, {"tz": settings.stats_timezone, "since": day_start(first_day, tz)}).mappings():
        if row["day"] in days:
            days[row["day"]] = {k: int(row[k]) for k in ("total", "completed", "failed", "cancelled")}
    daily = [{"date": d.isoformat(), **v} for d, v in sorted(days.items())]

    perf = conn.execute(PERFORMANCE, {"since": window_start}).mappings().one()
    avg_seconds = float(perf["pt_avg"]) if perf["pt_avg"] is not None else None
    avg_minutes = f"{(avg_seconds or 0) / 60:.2f}"
    oldest = perf["oldest_queued"]

    resources = {
        row["metric_name"]: {
            "value": float(row["metric_value"]) if isinstance(row["metric_value"], Decimal) else row["metric_value"],
            "data": row["metric_data"],
            # recorded_at is stored without a zone, in UTC.
            "recorded_at": row["recorded_at"].replace(tzinfo=UTC),
        }
        for row in conn.execute(RESOURCES).mappings()
    }

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

    def age_ms(self) -> float | None:
        if self._value is None:
            return None
        return (time.monotonic() - self._computed_monotonic) * 1000

    def get(self, max_age_ms: float | None = None) -> tuple[dict[str, Any], float]:
        """Figures no older than max_age_ms (default: the stats interval) and their age in ms."""
        limit = self.settings.job_stats_interval_ms if max_age_ms is None else max_age_ms
        age = self.age_ms()
        if self._value is not None and age is not None and age < limit:
            return self._value, age
        started = time.monotonic()
        with self._lock:
            # Someone else may have refreshed while we waited for the lock.
            if self._value is not None and self._computed_monotonic >= started:
                return self._value, self.age_ms() or 0.0
            with self.engine.connect() as conn:
                self._value = compute_stats(conn, self.settings)
            self._computed_monotonic = time.monotonic()
            return self._value, 0.0


def shared_stats() -> SharedStats:
    from flask import current_app

    return current_app.extensions["admin_service.stats"]
