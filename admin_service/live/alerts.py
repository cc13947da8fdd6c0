"""Alert rules over archive.analysis_jobs, logged as `job-alert` events.

Two sources:
- `job_alerts`: per-job alerts for the rows capture has just read (retries_exhausted),
  made idempotent by their dedupe key, so a re-capture of the same row logs nothing new.
- `evaluate_rules`: table-wide rules (high_failure_rate, queue_overflow,
  processing_timeout), each raised once per episode and resolved when it clears. The
  episode state lives in ADMIN_SCHEMA.alert_state and is changed in the caller's
  transaction together with the events it appends: a rolled-back pass neither logs an
  alert nor forgets one.

Every query filters on `status` or a `created_at` range, which the existing indexes
answer, so a pass costs the size of the queue / the window, not the size of the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from admin_service.clock import full_precision, iso, utc, utc_now_iso
from admin_service.config import Settings
from admin_service.db.dbapi import Cursor
from admin_service.db.tables import JOBS_TABLE
from admin_service.jobs.status import stored_values
from admin_service.live.log import NewEvent
from admin_service.names import EPISODE_RULES, HIGH_FAILURE_RATE, JOB_ALERT, PROCESSING_TIMEOUT, QUEUE_OVERFLOW, RETRIES_EXHAUSTED

RESOLVED_SEVERITY = "low"
MAX_JOB_IDS = 10
# An error message can be a whole stack trace; every subscriber receives the payload.
MAX_ERROR_CHARS = 1000
# Episode start times must be strictly increasing: they make the dedupe keys unique.
TICK = timedelta(microseconds=1)

JOBS = JOBS_TABLE


@dataclass(frozen=True)
class Check:
    """One rule's verdict for this pass and the figures behind it."""

    holds: bool
    data: dict[str, Any]
    message: str  # describes the condition as it is now (used for the raise)


def alert_payload(alert_type: str, severity: str, message: str, data: dict[str, Any]) -> dict[str, Any]:
    """A job-alert event's payload (what subscribers receive)."""
    return {"type": alert_type, "severity": severity, "message": message, "data": data, "timestamp": utc_now_iso()}


def _fetchone(cur: Cursor) -> tuple[Any, ...]:
    # The caller may hand us a RealDictCursor: read columns by position either way.
    row = cur.fetchone()
    return tuple(row.values()) if isinstance(row, Mapping) else tuple(row)


def _fetchall(cur: Cursor) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) if isinstance(r, Mapping) else tuple(r) for r in cur.fetchall()]


# --- per-job alerts ----------------------------------------------------------------------


def job_alerts(jobs: list[dict[str, Any]], settings: Settings) -> list[NewEvent]:
    """retries_exhausted for each failed job whose retry_count reached max_retries; once per job ever."""
    severity = settings.severity(RETRIES_EXHAUSTED)
    events: list[NewEvent] = []
    for job in jobs:
        retries, limit = job.get("retry_count"), job.get("max_retries")
        if job.get("status") != "failed" or retries is None or limit is None or retries < limit:
            continue
        row_id = str(job["id"])
        error = job.get("error_message")
        data = {
            # Job fields keep their column names, as in job-update events and REST rows.
            "job": {
                "id": row_id,
                "job_id": job.get("job_id"),
                "user_id": None if job.get("user_id") is None else str(job["user_id"]),
                "assessment_name": job.get("assessment_name"),
                "status": "failed",
                "retry_count": int(retries),
                "max_retries": int(limit),
                "error_message": error[:MAX_ERROR_CHARS] if isinstance(error, str) else None,
            },
        }
        message = f"Job {job.get('job_id') or row_id} failed after exhausting its retries ({retries}/{limit})"
        events.append(
            NewEvent(
                event=JOB_ALERT,
                kind=RETRIES_EXHAUSTED,
                payload=alert_payload(RETRIES_EXHAUSTED, severity, message, data),
                dedupe_key=f"alert:{RETRIES_EXHAUSTED}:{row_id}",
                job_row_id=row_id,
                status="failed",
            )
        )
    return events


# --- table-wide rules --------------------------------------------------------------------


def _high_failure_rate(cur: Cursor, settings: Settings, now: datetime) -> Check:
    window = settings.alert_failure_window_min
    threshold = settings.alert_failure_rate
    # created_at range (or status) index: only the window's rows are read.
    cur.execute(
        f"""
        SELECT count(*) FILTER (WHERE status = ANY(%s)), count(*)
        FROM {JOBS}
        WHERE created_at >= %s AND status = ANY(%s)
        """,
        (stored_values(["failed"]), now - timedelta(minutes=window), stored_values(["completed", "failed"])),
    )
    failed, finished = (int(v) for v in _fetchone(cur))
    rate = failed / finished if finished else 0.0
    # Below the minimum volume a couple of failures would be a 100 % rate: not an alert.
    holds = finished >= settings.alert_failure_min_jobs and rate > threshold
    data = {"failed": failed, "finished": finished, "rate": round(rate, 4), "windowMinutes": window, "threshold": threshold}
    message = (
        f"High failure rate: {failed} of {finished} jobs finished in the last {window} min failed "
        f"({rate:.0%}, threshold {threshold:.0%})"
    )
    return Check(holds, data, message)


def _queue_overflow(cur: Cursor, settings: Settings, now: datetime) -> Check:
    # (status, priority, created_at) covers both figures: an index-only scan of the queued rows.
    cur.execute(f"SELECT count(*), min(created_at) FROM {JOBS} WHERE status = ANY(%s)", (stored_values(["queued"]),))
    count, oldest = _fetchone(cur)
    queued = int(count)
    age = None if oldest is None else max(0, int((now - utc(oldest)).total_seconds()))
    too_many = queued > settings.alert_queue_max
    too_old = age is not None and age > settings.alert_queue_max_age_s
    data = {
        "queued": queued,
        "oldestAgeSeconds": age,
        "maxQueued": settings.alert_queue_max,
        "maxAgeSeconds": settings.alert_queue_max_age_s,
    }
    reasons = []
    if too_many or not too_old:
        reasons.append(f"{queued} jobs queued (max {settings.alert_queue_max})")
    if too_old:
        reasons.append(f"oldest queued job waiting {age}s (max {settings.alert_queue_max_age_s}s)")
    return Check(too_many or too_old, data, "Queue overflow: " + ", ".join(reasons))


# A processing row without processing_started_at (a writer that never set it) is judged by
# updated_at, so it cannot stay stuck unnoticed forever.
STARTED = "COALESCE(processing_started_at, updated_at)"


def _processing_timeout(cur: Cursor, settings: Settings, now: datetime) -> Check:
    timeout = settings.alert_processing_timeout_s
    cutoff = now - timedelta(seconds=timeout)
    statuses = stored_values(["processing"])
    # status index: only processing rows are read.
    cur.execute(
        f"SELECT count(*), min({STARTED}) FROM {JOBS} WHERE status = ANY(%s) AND {STARTED} < %s",
        (statuses, cutoff),
    )
    count_raw, oldest = _fetchone(cur)
    count = int(count_raw)
    job_ids: list[str] = []
    if count:
        cur.execute(
            f"SELECT id::text FROM {JOBS} WHERE status = ANY(%s) AND {STARTED} < %s ORDER BY {STARTED}, id LIMIT %s",
            (statuses, cutoff, MAX_JOB_IDS),
        )
        job_ids = [r[0] for r in _fetchall(cur)]
    data = {"count": count, "oldestStartedAt": iso(oldest), "timeoutSeconds": timeout, "jobIds": job_ids}
    message = f"Processing timeout: {count} job(s) processing for more than {timeout}s (oldest started {iso(oldest)})"
    return Check(count > 0, data, message)


RULES: tuple[tuple[str, str, Callable[[Cursor, Settings, datetime], Check]], ...] = (
    (HIGH_FAILURE_RATE, "High failure rate", _high_failure_rate),
    (QUEUE_OVERFLOW, "Queue overflow", _queue_overflow),
    (PROCESSING_TIMEOUT, "Processing timeout", _processing_timeout),
)
# Every episode rule named in names.py has its check here (the dashboard lists them from there).
assert tuple(rule for rule, _, _ in RULES) == EPISODE_RULES


def _lock_state(cur: Cursor, schema: str, now: datetime) -> dict[str, tuple[bool, datetime, bool]]:
    """Each rule's (active, since, created now), its row locked until the caller commits.

    Locking serialises two evaluators (there should be one, the capture leader), so an
    episode can never be raised twice.
    """
    rules = [name for name, _, _ in RULES]
    cur.execute(
        f"""
        INSERT INTO "{schema}".alert_state (rule, active, since)
        SELECT unnest(%s::varchar[]), false, %s
        ON CONFLICT (rule) DO NOTHING
        RETURNING rule
        """,
        (rules, now),
    )
    created = {r[0] for r in _fetchall(cur)}
    cur.execute(f'SELECT rule, active, since FROM "{schema}".alert_state WHERE rule = ANY(%s) FOR UPDATE', (rules,))
    return {rule: (bool(active), utc(since), rule in created) for rule, active, since in _fetchall(cur)}


def _set_state(cur: Cursor, schema: str, rule: str, active: bool, since: datetime, data: dict[str, Any]) -> None:
    cur.execute(
        f'UPDATE "{schema}".alert_state SET active = %s, since = %s, data = %s::jsonb WHERE rule = %s',
        (active, since, json.dumps(data), rule),
    )


def evaluate_rules(cur: Cursor, settings: Settings, now: datetime | None = None) -> list[NewEvent]:
    """Check every rule; return a raise event for each rule that starts to hold and a
    resolution event for each that stops. Runs in the caller's transaction."""
    schema = settings.admin_schema
    if now is None:
        # The database clock, the one that stamps the rows being judged.
        cur.execute("SELECT now()")
        now = _fetchone(cur)[0]
    now = utc(now)
    state = _lock_state(cur, schema, now)
    events: list[NewEvent] = []
    for rule, title, check_rule in RULES:
        check = check_rule(cur, settings, now)
        active, since, created = state[rule]
        if check.holds and not active:
            # Strictly after the previous episode even if the clock repeats or steps back.
            start = now if created else max(now, since + TICK)
            payload = alert_payload(rule, settings.severity(rule), check.message, check.data)
            events.append(NewEvent(JOB_ALERT, rule, payload, f"alert:{rule}:raised:{full_precision(start)}"))
            _set_state(cur, schema, rule, True, start, check.data)
        elif active and not check.holds:
            data = {**check.data, "resolved": True, "raisedAt": iso(since)}
            message = f"{title} cleared (raised at {iso(since)})"
            payload = alert_payload(rule, RESOLVED_SEVERITY, message, data)
            # Keyed by the episode's start: one resolution per episode.
            events.append(NewEvent(JOB_ALERT, rule, payload, f"alert:{rule}:resolved:{full_precision(since)}"))
            _set_state(cur, schema, rule, False, max(now, since + TICK), data)
    return events
