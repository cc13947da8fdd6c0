"""Alert episodes: each raised alert's lifecycle, active -> acknowledged -> resolved.

The one owner of the SQL on ADMIN_SCHEMA.alert_episodes. An episode is opened by the capture
leader in the transaction that logs its `job-alert` event (keyed by that event's dedupe key,
so a re-captured alert opens nothing new) and resolved there when the rule clears; an operator
acknowledges or resolves it through the REST routes. Every change appends an `alert:new` or
`alert:update` event to the event log and writes the notifications it causes to the outbox
(live/notify/outbox.py), all in one transaction: a change is either recorded, announced and
queued for delivery, or none of it.

A rule that fires again after it cleared opens a new episode. A per-job alert
(retries_exhausted) has no rule that clears: it stays until an operator resolves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg2.extras
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import text

from admin_service.clock import iso, utc
from admin_service.config import Settings
from admin_service.db.dbapi import Cursor
from admin_service.live.log import EventLog, NewEvent
from admin_service.live.notify.channels import Escalation
from admin_service.live.notify.outbox import Outbox
from admin_service.names import ALERT_ACKNOWLEDGED, ALERT_ACTIVE, ALERT_NEW, ALERT_RESOLVED, ALERT_UPDATE, JOB_ALERT

COLUMNS = (
    "id, type, severity, message, data, status, raised_at, acknowledged_at, acknowledged_by, acknowledge_note, "
    "resolved_at, resolved_by, resolve_note, resolution, escalations, updated_at, job_row_id"
)
NOTE_MAX = 1000


def alert_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An episode as clients see it: the alert:new / alert:update payload, the REST row and the
    `alert` of a webhook body. `timestamp` is when it last changed."""
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "severity": row["severity"],
        "message": row["message"],
        "status": row["status"],
        "data": row["data"],
        "timestamp": iso(row["updated_at"]),
        "createdAt": iso(row["raised_at"]),
        "updatedAt": iso(row["updated_at"]),
        "acknowledgedAt": iso(row["acknowledged_at"]),
        "acknowledgedBy": row["acknowledged_by"],
        "acknowledgeNote": row["acknowledge_note"],
        "resolvedAt": iso(row["resolved_at"]),
        # null with a resolvedAt: the rule cleared by itself
        "resolvedBy": row["resolved_by"],
        "resolveNote": row["resolve_note"],
        "resolution": row["resolution"],
        "escalations": int(row["escalations"]),
    }


def _event(name: str, row: Mapping[str, Any], change: str) -> NewEvent:
    # One event per episode change: its key names the episode, the change and when.
    key = f"{name}:{row['id']}:{change}:{iso(row['updated_at'])}"
    return NewEvent(name, str(row["type"]), alert_view(row), key)


def who(user: Mapping[str, Any]) -> str:
    """How an operator is named on an episode: email, else username, else id."""
    return str(user.get("email") or user.get("username") or user["id"])


class Transition(Exception):
    """An operator's change the episode's state does not allow (answered 409)."""


class Episodes:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.admin_schema
        self.table = f'"{self.schema}".alert_episodes'
        self.outbox = Outbox(settings)
        self.log = EventLog(self.schema)

    # -- the capture leader ----------------------------------------------------------------
    def follow(self, cur: Cursor, events: Sequence[NewEvent]) -> list[NewEvent]:
        """Open or resolve the episodes these job-alert events raise or clear, queue their
        notifications, and return the alert:new / alert:update events to log with them (in
        the caller's transaction, before the job-alert events are appended)."""
        out: list[NewEvent] = []
        alerts = [event for event in events if event.event == JOB_ALERT]
        if alerts:
            self.log.lock_for_append(cur)  # before any episode's row: one lock order (EventLog)
        for event in alerts:
            data = event.payload.get("data") or {}
            if data.get("resolved"):
                out.extend(self._cleared(cur, event))
            else:
                out.extend(self._raised(cur, event))
        return out

    def _dict_cursor(self, cur: Cursor) -> Cursor:
        return cur.connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor)

    def _raised(self, cur: Cursor, event: NewEvent) -> list[NewEvent]:
        payload = event.payload
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                INSERT INTO {self.table} (type, severity, message, data, raise_key, job_row_id, raised_at, updated_at)
                VALUES (%s, %s, %s, %s::jsonb, %s, %s, now(), now())
                ON CONFLICT (raise_key) DO NOTHING
                RETURNING {COLUMNS}
                """,
                (
                    payload["type"],
                    payload["severity"],
                    payload["message"],
                    json.dumps(payload["data"], default=str),
                    event.dedupe_key,
                    event.job_row_id,
                ),
            )
            row = dcur.fetchone()
            if row is None:
                return []  # this raise was recorded before
            flapping_until = self._flapping_until(dcur, row)
        self.outbox.announce_raise(cur, alert_view(row), not_before=flapping_until)
        return [_event(ALERT_NEW, row, "raised")]

    def _flapping_until(self, dcur: Cursor, row: Mapping[str, Any]) -> datetime | None:
        """A rule that fires again within ALERT_MIN_EPISODE_GAP_S of its last episode's end is
        flapping: its messages wait until the gap has passed (and are dropped if it clears first)."""
        gap = self.settings.alert_min_episode_gap_s
        if gap <= 0 or row["job_row_id"] is not None:
            return None
        dcur.execute(
            f"SELECT max(resolved_at) AS ended FROM {self.table} WHERE type = %s AND id < %s AND resolved_at IS NOT NULL "
            "AND resolved_by IS NULL AND resolved_at > now() - make_interval(secs => %s)",
            (row["type"], row["id"], gap),
        )
        found = dcur.fetchone()
        ended = None if found is None else found["ended"]
        if ended is None:
            return None
        return utc(ended) + timedelta(seconds=gap)

    def _cleared(self, cur: Cursor, event: NewEvent) -> list[NewEvent]:
        """The rule stopped holding: resolve its open episode (none if an operator resolved it)."""
        data = dict(event.payload.get("data") or {})
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                UPDATE {self.table} SET status = %s, resolved_at = now(), resolution = %s::jsonb, updated_at = now()
                WHERE id = (SELECT id FROM {self.table} WHERE type = %s AND status <> %s ORDER BY id DESC LIMIT 1)
                RETURNING {COLUMNS}
                """,
                (ALERT_RESOLVED, json.dumps(data, default=str), event.kind, ALERT_RESOLVED),
            )
            row = dcur.fetchone()
        if row is None:
            return []
        self.outbox.announce_resolution(cur, alert_view(row))
        return [_event(ALERT_UPDATE, row, "resolved")]

    # -- the dispatcher -----------------------------------------------------------------------
    def escalate(self, cur: Cursor, policy: Escalation) -> int:
        """Queue an escalation message for each episode still active (not acknowledged) after
        the policy's delay, and again every repeat interval, at most `max_times` in all."""
        channel = self.settings.notify.channel(policy.channel)
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                UPDATE {self.table} SET escalations = escalations + 1
                WHERE id IN (
                    SELECT id FROM {self.table}
                    WHERE status = %s AND escalations < %s
                      AND raised_at + make_interval(secs => %s + escalations * %s) <= now()
                    ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
                )
                RETURNING {COLUMNS}
                """,
                (ALERT_ACTIVE, policy.max_times, policy.after_s, policy.repeat_s),
            )
            rows = list(dcur.fetchall())
        queued = 0
        for row in rows:
            if channel is not None and channel.accepts(row["type"], row["severity"]):
                self.outbox.queue_escalation(cur, alert_view(row), policy.channel, int(row["escalations"]), policy.max_times)
                queued += 1
        return queued

    # -- operators (REST) --------------------------------------------------------------------
    def acknowledge(
        self, cur: Cursor, episode_id: int, user: Mapping[str, Any], note: str | None
    ) -> tuple[dict[str, Any], list[NewEvent]]:
        """Acknowledge an active episode: escalation stops. Acknowledging it again changes nothing;
        a resolved one cannot be (Transition)."""
        row = self._lock(cur, episode_id)
        if row is None:
            raise LookupError(episode_id)
        if row["status"] == ALERT_RESOLVED:
            raise Transition(f"Alert {episode_id} is already resolved; there is nothing to acknowledge")
        if row["status"] == ALERT_ACKNOWLEDGED:
            return row, []
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                UPDATE {self.table} SET status = %s, acknowledged_at = now(), acknowledged_by = %s,
                    acknowledged_by_id = %s, acknowledge_note = %s, updated_at = now()
                WHERE id = %s RETURNING {COLUMNS}
                """,
                (ALERT_ACKNOWLEDGED, who(user), str(user["id"]), note, episode_id),
            )
            updated: dict[str, Any] = dcur.fetchone()
        return updated, [_event(ALERT_UPDATE, updated, "acknowledged")]

    def resolve(
        self, cur: Cursor, episode_id: int, user: Mapping[str, Any], note: str | None
    ) -> tuple[dict[str, Any], list[NewEvent]]:
        """Resolve an episode by hand (the rule may still hold: the operator says it is handled).
        Resolving it again changes nothing."""
        row = self._lock(cur, episode_id)
        if row is None:
            raise LookupError(episode_id)
        if row["status"] == ALERT_RESOLVED:
            return row, []
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                UPDATE {self.table} SET status = %s, resolved_at = now(), resolved_by = %s, resolved_by_id = %s,
                    resolve_note = %s, updated_at = now()
                WHERE id = %s RETURNING {COLUMNS}
                """,
                (ALERT_RESOLVED, who(user), str(user["id"]), note, episode_id),
            )
            updated: dict[str, Any] = dcur.fetchone()
        self.outbox.announce_resolution(cur, alert_view(updated))
        return updated, [_event(ALERT_UPDATE, updated, "resolved")]

    def _lock(self, cur: Cursor, episode_id: int) -> dict[str, Any] | None:
        with self._dict_cursor(cur) as dcur:
            dcur.execute(f"SELECT {COLUMNS} FROM {self.table} WHERE id = %s FOR UPDATE", (episode_id,))
            row: dict[str, Any] | None = dcur.fetchone()
            return row

    # -- reading (REST) ------------------------------------------------------------------------
    def listed(self, conn: SqlConnection, statuses: Sequence[str], alert_type: str | None, limit: int) -> list[dict[str, Any]]:
        """Episodes newest first, of these states (all when empty) and this type (all when None)."""
        where = ["true"]
        if statuses:
            where.append("status = ANY(:statuses)")
        if alert_type:
            where.append("type = :type")
        rows = conn.execute(
            text(f"SELECT {COLUMNS} FROM {self.table} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"),
            {"statuses": list(statuses), "type": alert_type, "limit": limit},
        )
        return [alert_view(dict(row)) for row in rows.mappings()]

    def get(self, conn: SqlConnection, episode_id: int) -> dict[str, Any] | None:
        row = conn.execute(text(f"SELECT {COLUMNS} FROM {self.table} WHERE id = :id"), {"id": episode_id}).mappings().first()
        return None if row is None else alert_view(dict(row))
