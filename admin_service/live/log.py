"""The job event log (ADMIN_SCHEMA.job_events): appending, reading and pruning.

Only the capture leader appends, one transaction at a time, so ids become visible in
order and a reader that remembers the last id it saw never skips one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from admin_service.clock import utc_now_iso

# Channel the leader NOTIFYs after appending; every worker's tail LISTENs on it.
EVENTS_CHANNEL = "admin_service_job_events"
# Channel the opt-in trigger on archive.analysis_jobs NOTIFYs; the leader LISTENs on it.
CHANGES_CHANNEL = "admin_service_job_changes"


@dataclass(frozen=True)
class NewEvent:
    event: str  # job-update | job-alert
    kind: str  # created/updated/completed/failed/cancelled, or the alert type
    payload: dict[str, Any]
    dedupe_key: str
    job_row_id: str | None = None
    status: str | None = None


def alert_payload(alert_type: str, severity: str, message: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": alert_type, "severity": severity, "message": message, "data": data, "timestamp": utc_now_iso()}


def append_events(cur: Any, schema: str, events: list[NewEvent]) -> list[int]:
    """Insert events, skipping ones already logged (same dedupe key); return the new ids."""
    if not events:
        return []
    with cur.connection.cursor() as plain:  # the caller's cursor may return dicts
        return _insert(plain, schema, events)


def _insert(cur: Any, schema: str, events: list[NewEvent]) -> list[int]:
    cur.execute(
        f"""
        INSERT INTO "{schema}".job_events (event, kind, job_row_id, status, payload, dedupe_key)
        SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::uuid[], %s::varchar[], %s::jsonb[], %s::text[])
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id
        """,
        (
            [e.event for e in events],
            [e.kind for e in events],
            [e.job_row_id for e in events],
            [e.status for e in events],
            [json.dumps(e.payload, default=str) for e in events],
            [e.dedupe_key for e in events],
        ),
    )
    return [row[0] for row in cur.fetchall()]


def append_and_notify(cur: Any, schema: str, events: list[NewEvent]) -> list[int]:
    """Append events and wake every worker's tail (NOTIFY is delivered at commit)."""
    ids = append_events(cur, schema, events)
    if ids:
        cur.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(max(ids))))
    return ids


@contextmanager
def transaction(cur: Any) -> Iterator[None]:
    """An explicit transaction on an autocommit connection (LISTEN needs autocommit between them)."""
    cur.execute("BEGIN")
    try:
        yield
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def read_after(cur: Any, schema: str, after_id: int, limit: int = 1000) -> list[tuple[int, str, dict[str, Any]]]:
    cur.execute(
        f'SELECT id, event, payload FROM "{schema}".job_events WHERE id > %s ORDER BY id LIMIT %s',
        (after_id, limit),
    )
    return [(row[0], row[1], row[2]) for row in cur.fetchall()]


def prune(cur: Any, schema: str, retention_days: float) -> int:
    """Delete events older than the retention; remember the newest pruned id for `reset`."""
    cur.execute(
        f"""
        WITH gone AS (
            DELETE FROM "{schema}".job_events
            WHERE occurred_at < now() - make_interval(secs => %s)
            RETURNING id
        )
        UPDATE "{schema}".capture_state
        SET pruned_through = GREATEST(pruned_through, (SELECT max(id) FROM gone))
        WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)
        RETURNING pruned_through
        """,
        (retention_days * 86400,),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0
