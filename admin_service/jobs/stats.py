"""Job statistics: computed in a few index-friendly queries on parallel connections, once per
interval for the whole deployment, and shared by the REST endpoint and every live subscriber.

Once per deployment. The capture leader's process (live/runtime.py `_publish_stats`) computes
the figures once per JOB_STATS_INTERVAL_MS while anyone in the deployment wants them and
publishes them in ADMIN_SCHEMA.stats_snapshot; every worker of every instance serves that row
(REST, SSE and Socket.IO job-stats, /metrics), so all serve the same figures. Wanting costs no
write per request: a worker reads the row when its own copy is older than the interval (at most
once per interval), and the same statement pushes `wanted_until` forward (NOTIFYing the leader
when the deployment was idle). When no leader publishes (it died, capture is disabled), a worker
waits at most STATS_LEADER_WAIT_MS for it and then computes itself, saying so in
`computedBy.basis` ("fallback"). `fresh=true` computes in the requesting process (basis
"local"): the figures are then computed after the request began whether or not a leader lives,
and concurrent fresh requests of a process share one computation.

Counts that do not rescan. The counts per status come from ADMIN_SCHEMA.job_status_counts,
which the capture leader changes in the transaction that logs each change and a reconciliation
replaces by a full count every STATS_RECONCILE_S (`StatusCounts`, and live/capture.py
`Capturer.reconcile` for why nothing is counted twice or missed). They are served while a
capture leader holds its lock and captures exactly (the change-capture trigger: every change is
seen), or also while it polls with STATS_POLL_COUNTS (polling samples states: what it cannot see
waits for the next reconciliation); otherwise the figures' computation counts them
(`overview.countsBasis.method`: "maintained" or "counted")."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from admin_service import metrics
from admin_service.config import Settings
from admin_service.db.dbapi import Cursor
from admin_service.db.engine import transaction
from admin_service.db.tables import JOBS_TABLE, METRICS_TABLE
from admin_service.jobs.days import COUNTS_VERSION, ClosedDays, process_name
from admin_service.jobs.status import STATUSES, Transition, normalize, sql_list, stored_values
from admin_service.names import CAPTURE_EXACT

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
# Queue wait: processing_started_at - created_at. As float8 seconds (extract() is numeric since
# PostgreSQL 14: several times slower to sort). Also the trends' definitions (triage/trends.py).
PROCESSING_SECONDS_SQL = (
    "CASE WHEN status = 'completed' AND completed_at IS NOT NULL "
    "THEN date_part('epoch', completed_at - COALESCE(processing_started_at, created_at)) END"
)
QUEUE_WAIT_SECONDS_SQL = (
    "CASE WHEN processing_started_at IS NOT NULL THEN date_part('epoch', processing_started_at - created_at) END"
)
# Each over jobs created in the window, on a connection of its own: the two sorts of the
# percentiles run side by side (each is most of a cold computation's time at 10,000,000 jobs).
PROCESSING_TIME = text(
    f"""
    SELECT count(pt) AS n, avg(pt) AS pt_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY pt) AS pt_pct
    FROM (SELECT {PROCESSING_SECONDS_SQL} AS pt FROM {JOBS_TABLE} WHERE created_at >= :since) AS sample
    """
)
QUEUE_WAIT = text(
    f"""
    SELECT avg(qw) AS qw_avg,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY qw) AS qw_pct
    FROM (SELECT {QUEUE_WAIT_SECONDS_SQL} AS qw FROM {JOBS_TABLE} WHERE created_at >= :since) AS sample
    """
)
# Percentiles sort their rows: in memory, not spilled to disk (the default 4 MB spills a month
# of trends, ~255,000 rows at 1,000,000 jobs, or 24 hours at 10,000,000). Measured here the
# spill costs little while the files stay in the page cache (147-197 ms against 160-197 for a
# 30-day window); it keeps the sort off the disk when they do not. Also the trends' setting.
SORT_WORK_MEM = "48MB"

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


def counted(rows: Any) -> tuple[dict[str, int], int]:
    """(counts per shown status, total) from STATUS_COUNTS' rows."""
    counts = {name: 0 for name in STATUSES}
    total = others = 0
    for kind, status, n in rows:
        if kind == "total":
            total = n
            continue
        others += n
        name = normalize(status)
        if kind == "status" and name in counts:
            counts[name] += n
    counts["completed"] = total - others
    return counts, total


def _status_counts(conn: Connection) -> tuple[dict[str, int], int, dict[str, Any]]:
    counts, total = counted(conn.execute(STATUS_COUNTS))
    return counts, total, {"method": "counted", "countedAt": datetime.now(UTC)}


def _daily(conn: Connection, settings: Settings, first_day: date) -> dict[date, dict[str, int]]:
    """The 7 days' counts: closed days from their rollup where it is clean (jobs/days.py), the
    others (today, a day being rebuilt) counted from the jobs table from the first of them on."""
    tz = settings.tz
    bounds = [day_start(first_day + timedelta(days=i), tz) for i in range(8)]
    days = {first_day + timedelta(days=i): {"total": 0, "completed": 0, "failed": 0, "cancelled": 0} for i in range(7)}
    rolled = {}
    if settings.closed_days:
        rolled = ClosedDays(settings.admin_schema, COUNTS_VERSION).counts(conn, tz, first_day, first_day + timedelta(days=6))
    days.update(rolled)
    first_live = next((k for k, day in enumerate(days) if day not in rolled), None)
    if first_live is None:
        return days
    for row in conn.execute(DAILY, {"bounds": bounds, "since": bounds[first_live]}).mappings():
        day = first_day + timedelta(days=row["bucket"] - 1)
        if 1 <= row["bucket"] <= 7 and day not in rolled:
            days[day] = {k: int(row[k]) for k in ("total", "completed", "failed", "cancelled")}
    return days


def _sorted_figures(conn: Connection, stmt: Any, window_start: datetime) -> dict[str, Any]:
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_WORK_MEM}'")
    return dict(conn.execute(stmt, {"since": window_start}).mappings().one())


def _queue_and_resources(conn: Connection, window_start: datetime) -> dict[str, Any]:
    perf = _sorted_figures(conn, QUEUE_WAIT, window_start)
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


def in_parallel(engine: Engine, *calls: Callable[[Connection], Any]) -> list[Any]:
    """Each call on a connection of its own, at the same time (threads; greenlets under gevent,
    where db/green.py makes psycopg2 cooperative). The counts and the per-day figures read
    different indexes: run together they take the time of the slower one, not the sum."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        started = time.monotonic()
        try:
            # In a transaction: the percentiles' SET LOCAL work_mem needs one.
            with transaction(engine) as conn:
                results[i] = calls[i](conn)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)
        finally:
            # Database time, summed over the parallel connections (what the deployment pays).
            metrics.STATS_QUERY_SECONDS.labels("compute").inc(time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i,), name=f"stats-{i}", daemon=True) for i in range(1, len(calls))]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


CountsPart = Callable[[Connection], tuple[dict[str, int], int, dict[str, Any]]]


def compute_stats(
    conn: Connection | None,
    settings: Settings,
    now: datetime | None = None,
    *,
    engine: Engine | None = None,
    counts_part: CountsPart = _status_counts,
) -> dict[str, Any]:
    """The figures, on `conn` one query after another, or with `engine` on parallel connections.
    `counts_part` gives the counts per status (default: count them now)."""
    tz = settings.tz
    now = now or datetime.now(UTC)
    today = now.astimezone(tz).date()
    first_day = today - timedelta(days=6)
    window_start = now - timedelta(hours=settings.performance_window_hours)

    parts: list[Callable[[Connection], Any]] = [
        counts_part,
        lambda c: _daily(c, settings, first_day),
        lambda c: _sorted_figures(c, PROCESSING_TIME, window_start),
        lambda c: _queue_and_resources(c, window_start),
    ]
    if engine is not None:
        (counts, total, counts_basis), days, processing, queue = in_parallel(engine, *parts)
    else:
        assert conn is not None
        (counts, total, counts_basis), days, processing, queue = (part(conn) for part in parts)
    perf = {**processing, **queue}

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
            "countsBasis": counts_basis,
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


# Whether some session holds the capture leader's advisory lock (a key below 2**32, taken with
# pg_try_advisory_lock(bigint): pg_locks shows it as classid 0, objid key, objsubid 1).
LED = """EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                 AND l.classid = 0 AND l.objid = CAST(CAST(:key AS bigint) AS oid) AND l.objsubid = 1
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""

# --- counts maintained from captured changes ---------------------------------------------


def count_key(status: str | None) -> str:
    """The job_status_counts row a stored status is counted in: its shown name, or '' for a NULL
    or unknown status (in the total only, as STATUS_COUNTS counts them)."""
    name = normalize(status)
    return name if name in STATUSES else ""


class StatusCounts:
    """The one owner of SQL on job_status_counts and job_counts_state. Only the capture leader
    writes them, always in its own transactions (so applying and replacing never interleave)."""

    def __init__(self, schema: str) -> None:
        self._counts = f'"{schema}".job_status_counts'
        self._state = f'"{schema}".job_counts_state'

    def apply(self, cur: Cursor, transitions: list[Transition]) -> int:
        """Add the changes' effect to the counts, in the caller's (capture's) transaction: the
        counts move exactly when the events that describe the changes are logged."""
        delta: Counter[str] = Counter()
        changed = 0
        for before, after in transitions:
            if before == after:
                continue
            changed += 1
            if before is not None:
                delta[before] -= 1
            if after is not None:
                delta[after] += 1
        if not changed:
            return 0
        with cur.connection.cursor() as plain:
            keys = [k for k, n in delta.items() if n]
            if keys:
                plain.execute(
                    f"INSERT INTO {self._counts} (status, n) SELECT * FROM unnest(%s::varchar[], %s::bigint[]) "
                    f"ON CONFLICT (status) DO UPDATE SET n = {self._counts}.n + EXCLUDED.n",
                    (keys, [delta[k] for k in keys]),
                )
            plain.execute(f"UPDATE {self._state} SET changes_since = changes_since + %s WHERE id = 1", (changed,))
        return changed

    def replace(self, cur: Cursor, counts: dict[str, int], mode: str | None) -> dict[str, int]:
        """Set the counts (a reconciliation, in the caller's transaction); what they were off by."""
        with cur.connection.cursor() as plain:
            plain.execute(f"SELECT status, n FROM {self._counts}")
            old = {str(k): int(n) for k, n in plain.fetchall()}
            plain.execute(f"DELETE FROM {self._counts}")
            plain.execute(
                f"INSERT INTO {self._counts} (status, n) SELECT * FROM unnest(%s::varchar[], %s::bigint[])",
                (list(counts), list(counts.values())),
            )
            drift = {k: old.get(k, 0) - counts.get(k, 0) for k in sorted(set(old) | set(counts))}
            drift = {k: n for k, n in drift.items() if n}
            plain.execute(
                f"UPDATE {self._state} SET reconciled_at = now(), changes_since = 0, drift = %s, mode = %s WHERE id = 1",
                (json.dumps(drift), mode),
            )
        return drift

    def reconciled_at(self, cur: Cursor) -> datetime | None:
        with cur.connection.cursor() as plain:
            plain.execute(f"SELECT reconciled_at FROM {self._state} WHERE id = 1")
            row = plain.fetchone()
            return None if row is None else row[0]

    def read(
        self, conn: Connection, leader_lock: int | None, *, polled: bool
    ) -> tuple[dict[str, int], int, dict[str, Any]] | None:
        """The maintained counts, or None when they are not being kept (no capture leader holds
        `leader_lock`, or they were never reconciled), or are only sampled by polling and
        `polled` (STATS_POLL_COUNTS) is off."""
        if leader_lock is None:
            return None
        rows = conn.execute(
            text(
                f"""
                SELECT s.reconciled_at, s.changes_since, s.mode, c.status, c.n,
                       {LED} AS led
                FROM {self._state} s LEFT JOIN {self._counts} c ON true
                WHERE s.id = 1
                """
            ),
            {"key": leader_lock},
        ).all()
        if not rows or rows[0].reconciled_at is None or not rows[0].led:
            return None
        if rows[0].mode != CAPTURE_EXACT and not polled:
            return None
        counts = {name: 0 for name in STATUSES}
        total = 0
        for row in rows:
            if row.status is None:
                continue
            total += int(row.n)
            if row.status in counts:
                counts[row.status] += int(row.n)
        basis = {
            "method": "maintained",
            "reconciledAt": rows[0].reconciled_at,
            "changesSince": int(rows[0].changes_since),
            "capture": rows[0].mode,
        }
        return counts, total, basis


# --- the published figures -----------------------------------------------------------------

WANTED_CHANNEL = "admin_service_stats_wanted"  # the leader LISTENs: the deployment wants figures again
LEADER = "leader"  # computedBy.basis: published by the capture leader's process
LOCAL = "local"  # computed by this process on request (fresh=true)
FALLBACK = "fallback"  # computed by this process: no leader published in time
# A want holds this many intervals: a worker with listeners renews it every interval.
WANT_HOLD_INTERVALS = 3
# How often a worker waiting for the leader's figures looks at the row again.
WAIT_POLL_S = 0.05


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _when(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def revive(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures read back from json, with their datetimes as datetimes again (as computed)."""
    figures["computedAt"] = _when(figures["computedAt"])
    perf = figures["performance"]
    perf["window"]["start"] = _when(perf["window"]["start"])
    perf["window"]["end"] = _when(perf["window"]["end"])
    perf["oldestQueuedJobCreatedAt"] = _when(perf["oldestQueuedJobCreatedAt"])
    for metric in figures["resourceUtilization"].values():
        metric["recorded_at"] = _when(metric["recorded_at"])
    basis = figures["overview"].get("countsBasis") or {}
    for key in ("reconciledAt", "countedAt"):
        if key in basis:
            basis[key] = _when(basis[key])
    return figures


class Snapshots:
    """The one owner of SQL on stats_snapshot: the published figures and the demand."""

    def __init__(self, schema: str) -> None:
        self._table = f'"{schema}".stats_snapshot'

    def want_and_read(
        self, engine: Engine, hold_s: float, leader_lock: int | None
    ) -> tuple[dict[str, Any] | None, float | None, bool]:
        """Push the demand forward and read the published figures: (figures, age in ms, whether a
        capture leader holds `leader_lock`, i.e. whether waiting for figures makes sense)."""
        with engine.begin() as conn:
            row = conn.execute(
                text(
                    f"""
                    WITH before AS (SELECT wanted_until FROM {self._table} WHERE id = 1)
                    UPDATE {self._table} SET wanted_until = GREATEST(wanted_until, now() + make_interval(secs => :hold))
                    WHERE id = 1
                    RETURNING figures, computed_by,
                              1000 * date_part('epoch', now() - computed_at) AS age_ms,
                              COALESCE((SELECT wanted_until FROM before) < now(), true) AS was_idle,
                              CAST(:key AS bigint) IS NOT NULL AND {LED} AS led
                    """
                ),
                {"hold": hold_s, "key": leader_lock},
            ).one_or_none()
            if row is None:
                return None, None, False
            if row.was_idle and row.led:
                conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WANTED_CHANNEL})
        return row.figures, row.age_ms, bool(row.led)

    def read(self, engine: Engine) -> tuple[dict[str, Any] | None, float | None]:
        with engine.connect() as conn:
            row = conn.execute(
                text(f"SELECT figures, 1000 * date_part('epoch', now() - computed_at) AS age_ms FROM {self._table} WHERE id = 1")
            ).one_or_none()
        return (None, None) if row is None else (row.figures, row.age_ms)

    def wanted(self, cur: Cursor) -> bool:
        cur.execute(f"SELECT COALESCE(wanted_until > now(), false) FROM {self._table} WHERE id = 1")
        row = cur.fetchone()
        return bool(row and row[0])

    def publish(self, engine: Engine, figures: dict[str, Any], elapsed_s: float) -> None:
        """Store figures whose queries started `elapsed_s` ago (aged by the database's clock)."""
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {self._table} SET figures = CAST(:figures AS json), computed_by = :by, "
                    "computed_at = clock_timestamp() - make_interval(secs => :elapsed) WHERE id = 1"
                ),
                {
                    "figures": json.dumps(figures, default=_json_default),
                    "by": figures["computedBy"]["process"],
                    "elapsed": elapsed_s,
                },
            )


# A worker looks for the leader's next figures this share of the interval after they are due
# (the leader's computation takes that long to appear): served figures are at most
# (1 + FETCH_MARGIN) intervals old while the leader publishes.
FETCH_MARGIN = 0.1


class SharedStats:
    """The figures as this process serves them: the deployment's published ones, fetched at most
    once per interval (or computed here: fresh=true, or no leader publishing in time).

    Concurrent callers that find them stale wait for one fetch or computation instead of each
    running the queries (the old service ran 7 queries per request and per dashboard).
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.counts = StatusCounts(settings.admin_schema)
        self.snapshots = Snapshots(settings.admin_schema)
        # The capture leader's advisory lock key (set by live/runtime.py): while some process
        # holds it, the maintained counts are kept. None: no live runtime, always count.
        self.leader_lock: int | None = None
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._computed_monotonic = 0.0
        self._next_fetch = 0.0  # monotonic: when to look for newer figures
        self._rows: int | None = None
        self._rows_read: float | None = None
        self._fell_back = False

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
        """Figures and their age in ms: the deployment's (fetched at most once per interval), or
        for an explicit max_age_ms, no older than that (max_age_ms=0: computed here, after this
        call began)."""
        if max_age_ms is None:
            if self._value is not None and time.monotonic() < self._next_fetch:
                return self._value, self.age_ms() or 0.0
            with self._lock:
                if self._value is None or time.monotonic() >= self._next_fetch:
                    self._refresh()
                assert self._value is not None
                return self._value, self.age_ms() or 0.0
        age = self.age_ms()
        if self._value is not None and age is not None and age < max_age_ms:
            return self._value, age
        started = time.monotonic()
        with self._lock:
            # Someone else may have computed while we waited for the lock: figures young
            # enough, or (for max_age_ms=0) whose computation began after this call did.
            age = self.age_ms()
            if self._value is not None and age is not None and (age < max_age_ms or self._computed_monotonic >= started):
                return self._value, age
            self._compute(LOCAL)
            self._next_fetch = self._computed_monotonic + self.settings.job_stats_interval_ms / 1000
            return self._value, 0.0  # type: ignore[return-value]

    def compute(self, basis: str) -> dict[str, Any]:
        """The figures computed by this process now (maintained counts when they are kept)."""

        def counts_part(conn: Connection) -> tuple[dict[str, int], int, dict[str, Any]]:
            polled = self.settings.stats_poll_counts
            return self.counts.read(conn, self.leader_lock, polled=polled) or _status_counts(conn)

        figures = compute_stats(None, self.settings, engine=self.engine, counts_part=counts_part)
        figures["computedBy"] = {"process": process_name(), "basis": basis}
        metrics.STATS_COMPUTATIONS.labels(basis).inc()
        return figures

    def _compute(self, basis: str) -> None:
        started = time.monotonic()
        self._value = self.compute(basis)
        # Aged from when the queries started: the figures are at least that old.
        self._computed_monotonic = started

    def _adopt(self, figures: dict[str, Any], age_ms: float) -> None:
        self._value = revive(figures)
        self._value.setdefault("computedBy", {"process": None, "basis": LEADER})
        self._computed_monotonic = time.monotonic() - max(0.0, age_ms) / 1000
        # The leader's next figures are due when these are an interval old.
        interval_s = self.settings.job_stats_interval_ms / 1000
        self._next_fetch = self._computed_monotonic + interval_s * (1 + FETCH_MARGIN)
        if self._fell_back:
            log.info("stats: figures from the leader again")
            self._fell_back = False

    def _fetch(self, *, want: bool) -> tuple[dict[str, Any] | None, float | None, bool]:
        started = time.monotonic()
        try:
            if want:
                hold = self.settings.job_stats_interval_ms / 1000 * WANT_HOLD_INTERVALS
                return self.snapshots.want_and_read(self.engine, hold, self.leader_lock)
            return (*self.snapshots.read(self.engine), True)
        finally:
            metrics.STATS_QUERY_SECONDS.labels("fetch").inc(time.monotonic() - started)

    def _refresh(self) -> None:
        """The leader's figures when younger than the interval (while a capture leader lives,
        waiting up to STATS_LEADER_WAIT_MS for new ones unless the last wait was in vain), else
        computed here."""
        interval_ms = self.settings.job_stats_interval_ms
        deadline = time.monotonic() + self.settings.stats_leader_wait_ms / 1000
        figures, age, led = self._fetch(want=True)  # the one write: at most once per interval

        def young() -> bool:
            return figures is not None and age is not None and age < interval_ms

        # Without a leader nothing is served from the row (a dead leader's figures only age).
        if led:
            # Waiting once per fall-back at most: a leader that did not publish during the last
            # wait does not hold up every interval's first request.
            while not young() and not self._fell_back and time.monotonic() < deadline:
                time.sleep(WAIT_POLL_S)
                figures, age, _ = self._fetch(want=False)
            if young():
                assert figures is not None and age is not None
                self._adopt(figures, age)
                return
        if not self._fell_back:
            log.warning(
                "stats: %s: computing in this process",
                f"no figures from the leader within {self.settings.stats_leader_wait_ms} ms" if led else "no capture leader",
            )
            self._fell_back = True
        self._compute(FALLBACK)
        self._next_fetch = self._computed_monotonic + interval_ms / 1000
