"""The job event log (ADMIN_SCHEMA.job_events and its capture_state row): the one owner of
their SQL, like django-eventstream's storage seam (append_event, get_events, get_current_id).

Appenders (the capture leader, the action dispatcher, the action routes and an operator's
alert change) serialise on the capture_state row (lock_for_append, which append takes
too; taken first in a transaction, before any other row it changes: one lock order), so ids
become visible in order and a reader that remembers the last id it saw never skips one. Readers: every
worker's tail (read_after), SSE replay (replay_bounds, read_after) and the REST views
(timeline, recent_alerts).

Methods taking a cursor read rows by position and run in the caller's transaction; the
ones capture calls with its dict-returning cursor open a plain cursor on the same
connection. The REST views pass a SQLAlchemy connection (pooled, read only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection as SqlConnection
from sqlalchemy import text

from admin_service.db.dbapi import Cursor
from admin_service.live.hub import LiveEvent
from admin_service.names import JOB_ALERT, JOB_UPDATE

# Channel the leader NOTIFYs after appending; every worker's tail LISTENs on it.
EVENTS_CHANNEL = "admin_service_job_events"
# Channel the opt-in trigger on archive.analysis_jobs NOTIFYs; the leader LISTENs on it.
CHANGES_CHANNEL = "admin_service_job_changes"
# Its payload when the change-capture triggers were just installed or dropped: the leader
# looks at the mode at once, not up to CAPTURE_MODE_CHECK_S later.
MODE_CHANGED = "capture-mode"
# Rows per read_after call unless asked otherwise.
READ_PAGE = 1000


@dataclass(frozen=True)
class NewEvent:
    event: str  # job-update | job-alert
    kind: str  # created/updated/completed/failed/cancelled, or the alert type
    payload: dict[str, Any]
    dedupe_key: str
    job_row_id: str | None = None
    status: str | None = None
    change_id: int | None = None  # the job_changes row it came from (exact capture)


class EventLog:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._events = f'"{schema}".job_events'
        self._state = f'"{schema}".capture_state'

    # -- appending (the capture leader) -----------------------------------------------------
    def append(self, cur: Cursor, events: Sequence[NewEvent]) -> list[int]:
        """Insert events, skipping ones already logged (same dedupe key); return the new ids."""
        if not events:
            return []
        self.lock_for_append(cur)
        with cur.connection.cursor() as plain:
            plain.execute(
                f"""
                INSERT INTO {self._events} (event, kind, job_row_id, status, payload, dedupe_key, change_id)
                SELECT * FROM unnest(
                    %s::varchar[], %s::varchar[], %s::uuid[], %s::varchar[], %s::jsonb[], %s::text[], %s::bigint[]
                )
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
                    [e.change_id for e in events],
                ),
            )
            return [int(row[0]) for row in plain.fetchall()]

    def lock_for_append(self, cur: Cursor) -> None:
        """One appender at a time: ids are taken after this lock, so they commit in order.
        Capture's transactions hold it from their start (lock_watermark); a transaction that
        also changes action items or alert episodes (the dispatcher, the action routes, an
        operator's acknowledge) takes it first, before those rows, as capture does: one lock
        order, so appenders wait for each other instead of deadlocking."""
        with cur.connection.cursor() as plain:
            plain.execute(
                f"INSERT INTO {self._state} (id, watermark) VALUES (1, now() - interval '10 seconds') ON CONFLICT (id) DO NOTHING"
            )
            plain.execute(f"SELECT 1 FROM {self._state} WHERE id = 1 FOR UPDATE")

    def append_and_notify(self, cur: Cursor, events: Sequence[NewEvent]) -> list[int]:
        """Append events and wake every worker's tail (NOTIFY is delivered at commit)."""
        ids = self.append(cur, events)
        if ids:
            cur.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, str(max(ids))))
        return ids

    def prune(self, cur: Cursor, retention_days: float) -> int:
        """Delete events older than the retention; remember the newest pruned id for `reset`."""
        cur.execute(
            f"""
            WITH gone AS (
                DELETE FROM {self._events}
                WHERE occurred_at < now() - make_interval(secs => %s)
                RETURNING id
            )
            UPDATE {self._state}
            SET pruned_through = GREATEST(pruned_through, (SELECT max(id) FROM gone))
            WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)
            RETURNING pruned_through
            """,
            (retention_days * 86400,),
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0

    # -- the capture watermark --------------------------------------------------------------
    def lock_watermark(self, cur: Cursor, overlap: timedelta) -> datetime:
        """The capture watermark, its row locked until the caller's transaction ends (created
        `overlap` before now on first use)."""
        with cur.connection.cursor() as plain:
            plain.execute(
                f"INSERT INTO {self._state} (id, watermark) VALUES (1, now() - %s) ON CONFLICT (id) DO NOTHING", (overlap,)
            )
            plain.execute(f"SELECT watermark FROM {self._state} WHERE id = 1 FOR UPDATE")
            watermark: datetime = plain.fetchone()[0]
            return watermark

    def advance_watermark(self, cur: Cursor, mark: datetime) -> None:
        """Move the watermark forward to `mark` (never back)."""
        with cur.connection.cursor() as plain:
            plain.execute(
                f"UPDATE {self._state} SET watermark = GREATEST(watermark, %s), updated_at = now() WHERE id = 1", (mark,)
            )

    def logged_keys(self, cur: Cursor, keys: Sequence[str]) -> dict[str, bool]:
        """Which of these dedupe keys are logged: key -> whether its event came from a change row."""
        if not keys:
            return {}
        with cur.connection.cursor() as plain:
            plain.execute(
                f"SELECT dedupe_key, change_id IS NOT NULL FROM {self._events} WHERE dedupe_key = ANY(%s::text[])", (list(keys),)
            )
            return {str(key): bool(from_change) for key, from_change in plain.fetchall()}

    def leader_mode(self, cur: Cursor) -> str | None:
        """The mode the last capture leader ran in (None before any)."""
        with cur.connection.cursor() as plain:
            plain.execute(f"SELECT mode FROM {self._state} WHERE id = 1")
            row = plain.fetchone()
            return None if row is None or row[0] is None else str(row[0])

    def set_leader_mode(self, cur: Cursor, mode: str) -> None:
        with cur.connection.cursor() as plain:
            plain.execute(
                f"INSERT INTO {self._state} (id, watermark, mode) VALUES (1, now(), %s) "
                "ON CONFLICT (id) DO UPDATE SET mode = EXCLUDED.mode",
                (mode,),
            )

    def last_statuses(self, cur: Cursor, job_row_ids: Sequence[str]) -> dict[str, str]:
        """The status of each job's newest logged job-update (jobs never logged are absent)."""
        with cur.connection.cursor() as plain:
            plain.execute(
                f"SELECT DISTINCT ON (job_row_id) job_row_id::text, status FROM {self._events} "
                "WHERE job_row_id = ANY(%s::uuid[]) AND event = %s ORDER BY job_row_id, id DESC",
                (list(job_row_ids), JOB_UPDATE),
            )
            return {str(job): str(status) for job, status in plain.fetchall()}

    def open_jobs(self, cur: Cursor, statuses: Sequence[str]) -> list[str]:
        """Jobs whose newest logged job-update shows one of `statuses`: the open jobs as the log
        last saw them (a new capture leader starts from them)."""
        with cur.connection.cursor() as plain:
            plain.execute(
                f"SELECT job_row_id::text FROM (SELECT DISTINCT ON (job_row_id) job_row_id, status FROM {self._events} "
                "WHERE event = %s AND job_row_id IS NOT NULL ORDER BY job_row_id, id DESC) newest WHERE status = ANY(%s)",
                (JOB_UPDATE, list(statuses)),
            )
            return [str(row[0]) for row in plain.fetchall()]

    # -- reading (tail, replay) -------------------------------------------------------------
    def read_after(self, cur: Cursor, after_id: int, limit: int = READ_PAGE) -> list[LiveEvent]:
        """Up to `limit` events after `after_id`, oldest first."""
        cur.execute(f"SELECT id, event, payload FROM {self._events} WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit))
        return [LiveEvent(name, payload, event_id) for event_id, name, payload in cur.fetchall()]

    def newest_id(self, cur: Cursor) -> int:
        """The newest logged id (0 for an empty log)."""
        cur.execute(f"SELECT COALESCE(max(id), 0) FROM {self._events}")
        return int(cur.fetchone()[0])

    def replay_bounds(self, cur: Cursor) -> tuple[int, int]:
        """(pruned_through, newest id): events after the first and up to the second can be replayed."""
        cur.execute(f"SELECT (SELECT pruned_through FROM {self._state} WHERE id = 1), (SELECT max(id) FROM {self._events})")
        pruned, newest = cur.fetchone()
        return int(pruned or 0), int(newest or 0)

    # -- REST views ---------------------------------------------------------------------------
    def timeline(self, conn: SqlConnection, job_row_id: Any) -> list[dict[str, Any]]:
        """Every logged event of one job, oldest first (with the job's status for job updates)."""
        rows = conn.execute(
            text(f"SELECT id, event, kind, status, occurred_at, payload FROM {self._events} WHERE job_row_id = :id ORDER BY id"),
            {"id": job_row_id},
        )
        return [dict(row) for row in rows.mappings()]

    def recent_alerts(self, conn: SqlConnection, alert_type: str | None, limit: int) -> list[dict[str, Any]]:
        """Alerts and their resolutions, newest first, of one type or all."""
        only_type = "AND kind = :type" if alert_type else ""
        rows = conn.execute(
            text(
                f"SELECT id, event, kind, occurred_at, payload FROM {self._events} "
                f"WHERE event = :event {only_type} ORDER BY id DESC LIMIT :limit"
            ),
            {"event": JOB_ALERT, "type": alert_type, "limit": limit},
        )
        return [dict(row) for row in rows.mappings()]
