"""The SQL of actions and their items (ADMIN_SCHEMA.actions, .action_items): one owner.

Every function takes a psycopg2 cursor returning dicts (RealDictCursor) and runs in the
caller's transaction: the routes' (through SQLAlchemy's connection), the dispatcher's and
capture's (their own connections).

Item states: pending (not yet handed over, or to be retried), sent (the transport confirmed
it), picked_up (capture saw the job leave `failed` after the send), failed (the owner refused
it), skipped (not failed when snapshotted, no longer failed when it was due, or cancelled).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from admin_service.clock import utc_now_iso
from admin_service.db.dbapi import Cursor
from admin_service.live.log import NewEvent
from admin_service.names import JOB_ACTION

ITEM_STATES = ("pending", "sent", "picked_up", "failed", "skipped")
ACTION_STATES = ("pending", "running", "done", "failed", "cancelled")
OPEN_ACTION_STATES = ("pending", "running")
RETRY = "retry"
KINDS = (RETRY,)
NOT_FAILED = "not failed when the action was requested (status {status}): only failed jobs are retried"
IN_FLIGHT = "already being retried by action {action} (sent, not picked up yet)"
NO_LONGER_FAILED = "no longer failed when it was due (status {status}): someone else retried it"

ACTION_COLUMNS = (
    "id, kind, state, requested_by, requested_by_email, role, reason, filter, total, transport, "
    "created_at, started_at, finished_at, cancelled_by, updated_at"
)
ITEM_COLUMNS = (
    "id, action_id, position, job_row_id, job_id, state, reason, attempts, last_error, next_attempt_at, "
    "attempted_at, sent_at, picked_up_at, picked_up_status, overdue_at"
)


class ActionStore:
    def __init__(self, schema: str) -> None:
        self.actions = f'"{schema}".actions'
        self.items = f'"{schema}".action_items'

    # -- the request -------------------------------------------------------------------------
    def create(
        self,
        cur: Cursor,
        *,
        kind: str,
        requested_by: str,
        email: str | None,
        role: str,
        reason: str,
        given_filter: dict[str, Any] | None,
        jobs: Sequence[dict[str, Any]],
        transport: str,
        nonce: uuid.UUID | None,
    ) -> uuid.UUID:
        """The action and one item per job, in the caller's transaction (nothing is sent before
        it commits). Jobs not failed now, or being retried by another action already, are items
        skipped with the reason."""
        action_id = uuid.uuid4()
        busy = self.in_flight(cur, [job["id"] for job in jobs])

        def skip_reason(job: dict[str, Any]) -> str | None:
            if job["status"] != "failed":
                return NOT_FAILED.format(status=job["status"])
            if str(job["id"]) in busy:
                return IN_FLIGHT.format(action=busy[str(job["id"])])
            return None

        reasons = [skip_reason(job) for job in jobs]
        pending = sum(1 for reason in reasons if reason is None)
        cur.execute(
            f"""
            INSERT INTO {self.actions} (id, kind, state, requested_by, requested_by_email, role, reason, filter, job_ids,
                                        total, transport, confirmation_nonce, finished_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::uuid[], %s, %s, %s, CASE WHEN %s THEN now() END)
            """,
            (
                action_id,
                kind,
                "pending" if pending else "done",
                requested_by,
                email,
                role,
                reason,
                json.dumps(given_filter) if given_filter is not None else None,
                [job["id"] for job in jobs],
                len(jobs),
                transport,
                nonce,
                not pending,
            ),
        )
        cur.execute(
            f"""
            INSERT INTO {self.items} (id, action_id, position, job_row_id, job_id, state, reason)
            SELECT gen_random_uuid(), %s, n, job_row_id, job_id, state, reason
            FROM unnest(%s::uuid[], %s::varchar[], %s::varchar[], %s::text[]) WITH ORDINALITY AS t(job_row_id, job_id, state, reason, n)
            """,
            (
                action_id,
                [job["id"] for job in jobs],
                [job["job_id"] for job in jobs],
                ["pending" if reason is None else "skipped" for reason in reasons],
                reasons,
            ),
        )
        return action_id

    def in_flight(self, cur: Cursor, job_row_ids: Sequence[Any]) -> dict[str, str]:
        """Jobs with an item of an open action not yet picked up: job row id -> that action."""
        cur.execute(
            f"""
            SELECT DISTINCT ON (i.job_row_id) i.job_row_id::text AS job, i.action_id::text AS action
            FROM {self.items} i JOIN {self.actions} a ON a.id = i.action_id
            WHERE i.job_row_id = ANY(%s::uuid[]) AND i.state IN ('pending', 'sent') AND a.state IN ('pending', 'running', 'done')
            """,
            ([str(j) for j in job_row_ids],),
        )
        return {row["job"]: row["action"] for row in cur.fetchall()}

    def nonce_used(self, cur: Cursor, nonce: uuid.UUID) -> str | None:
        cur.execute(f"SELECT id::text AS id FROM {self.actions} WHERE confirmation_nonce = %s", (nonce,))
        row = cur.fetchone()
        return None if row is None else str(row["id"])

    # -- reading -------------------------------------------------------------------------------
    def counts(self, cur: Cursor, action_ids: Sequence[uuid.UUID | str]) -> dict[str, dict[str, int]]:
        """Items per state (and `overdue`: sent, not picked up in time) of each action."""
        cur.execute(
            f"""
            SELECT action_id::text AS action_id, state, count(*) AS n, count(*) FILTER (WHERE overdue_at IS NOT NULL) AS overdue
            FROM {self.items} WHERE action_id = ANY(%s::uuid[]) GROUP BY action_id, state
            """,
            ([str(a) for a in action_ids],),
        )
        counts: dict[str, dict[str, int]] = {str(a): {**dict.fromkeys(ITEM_STATES, 0), "overdue": 0} for a in action_ids}
        for row in cur.fetchall():
            entry = counts[row["action_id"]]
            entry[row["state"]] = int(row["n"])
            if row["state"] == "sent":
                entry["overdue"] = int(row["overdue"])
        return counts

    def get(self, cur: Cursor, action_id: uuid.UUID | str) -> dict[str, Any] | None:
        cur.execute(f"SELECT {ACTION_COLUMNS} FROM {self.actions} WHERE id = %s", (str(action_id),))
        row = cur.fetchone()
        if row is None:
            return None
        return self._with_counts(cur, [dict(row)])[0]

    def _with_counts(self, cur: Cursor, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts = self.counts(cur, [row["id"] for row in rows])
        return [action_json(row, counts[str(row["id"])]) for row in rows]

    def item_rows(
        self, cur: Cursor, action_id: uuid.UUID | str, state: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        only = "AND state = %(state)s" if state else ""
        cur.execute(
            f"SELECT {ITEM_COLUMNS} FROM {self.items} WHERE action_id = %(id)s {only} ORDER BY position LIMIT %(limit)s OFFSET %(offset)s",
            {"id": str(action_id), "state": state, "limit": limit, "offset": offset},
        )
        return [dict(row) for row in cur.fetchall()]

    def listing(self, cur: Cursor, where: dict[str, Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Actions newest first, filtered by who (requested_by or a part of their email), kind,
        state and created_at range."""
        conds: list[str] = []
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if where.get("requested_by"):
            conds.append("requested_by = %(requested_by)s")
            params["requested_by"] = str(where["requested_by"])
        if where.get("requested_by_email"):
            conds.append("requested_by_email ILIKE %(email)s ESCAPE '\\'")
            params["email"] = (
                "%" + where["requested_by_email"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
        for name in ("kind", "state"):
            if where.get(name):
                conds.append(f"{name} = %({name})s")
                params[name] = where[name]
        if where.get("created_from") is not None:
            conds.append("created_at >= %(created_from)s")
            params["created_from"] = where["created_from"]
        if where.get("created_to") is not None:
            conds.append("created_at < %(created_to)s")
            params["created_to"] = where["created_to"]
        clause = f"WHERE {' AND '.join(conds)}" if conds else ""
        cur.execute(f"SELECT count(*) AS n FROM {self.actions} {clause}", params)
        total = int(cur.fetchone()["n"])
        cur.execute(
            f"SELECT {ACTION_COLUMNS} FROM {self.actions} {clause} ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = [dict(row) for row in cur.fetchall()]
        return (self._with_counts(cur, rows) if rows else []), total

    def for_job(self, cur: Cursor, job_row_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """Each action that covered this job, with the job's item (for its timeline)."""
        cur.execute(
            f"""
            SELECT a.id AS action_id, a.kind, a.reason, a.requested_by, a.requested_by_email, a.role, a.created_at,
                   i.id AS item_id, i.state, i.reason AS item_reason, i.attempts, i.last_error, i.sent_at, i.picked_up_at,
                   i.picked_up_status, i.overdue_at
            FROM {self.items} i JOIN {self.actions} a ON a.id = i.action_id
            WHERE i.job_row_id = %s ORDER BY a.created_at, a.id
            """,
            (str(job_row_id),),
        )
        return [dict(row) for row in cur.fetchall()]

    # -- cancelling ----------------------------------------------------------------------------
    def cancel(self, cur: Cursor, action_id: uuid.UUID | str, by: str, email: str | None) -> int:
        """Skip the items not handed over yet; the action is cancelled when any were. What was
        sent stays sent: the platform has it."""
        cur.execute(f"SELECT state FROM {self.actions} WHERE id = %s FOR UPDATE", (str(action_id),))
        cur.execute(
            f"UPDATE {self.items} SET state = 'skipped', reason = %s, updated_at = now() WHERE action_id = %s AND state = 'pending'",
            (f"cancelled by {email or by} before it was sent", str(action_id)),
        )
        skipped = cur.rowcount
        if skipped:
            cur.execute(
                f"UPDATE {self.actions} SET state = 'cancelled', cancelled_by = %s, finished_at = now(), updated_at = now() "
                "WHERE id = %s",
                (by, str(action_id)),
            )
        return skipped

    # -- the dispatcher ------------------------------------------------------------------------
    def due(self, cur: Cursor, limit: int) -> list[dict[str, Any]]:
        """Pending items whose time has come, oldest action first, in snapshot order."""
        cur.execute(
            f"""
            SELECT i.id, i.action_id, i.job_row_id, i.job_id, i.attempts, a.kind, a.reason, a.requested_by,
                   a.requested_by_email, a.created_at AS requested_at
            FROM {self.items} i JOIN {self.actions} a ON a.id = i.action_id
            WHERE i.state = 'pending' AND i.next_attempt_at <= now() AND a.state IN ('pending', 'running')
            ORDER BY i.next_attempt_at, a.created_at, i.position
            LIMIT %s
            """,
            (limit,),
        )
        return [dict(row) for row in cur.fetchall()]

    def begin_attempt(self, cur: Cursor, item_ids: Sequence[uuid.UUID]) -> list[str]:
        """Count the attempts and stamp them before sending: capture may see the owner move the
        job before the confirm is recorded, and must know the send began. Returns the actions
        that started running now."""
        cur.execute(
            f"UPDATE {self.items} SET attempts = attempts + 1, attempted_at = now(), updated_at = now() WHERE id = ANY(%s::uuid[])",
            ([str(i) for i in item_ids],),
        )
        cur.execute(
            f"""
            UPDATE {self.actions} SET state = 'running', started_at = now(), updated_at = now()
            WHERE state = 'pending' AND id IN (SELECT action_id FROM {self.items} WHERE id = ANY(%s::uuid[]))
            RETURNING id::text AS id
            """,
            ([str(i) for i in item_ids],),
        )
        return [str(row["id"]) for row in cur.fetchall()]

    def release(self, cur: Cursor, item_ids: Sequence[uuid.UUID]) -> None:
        """Undo begin_attempt for items that were not sent after all."""
        cur.execute(
            f"UPDATE {self.items} SET attempts = attempts - 1, updated_at = now() WHERE id = ANY(%s::uuid[]) AND state = 'pending'",
            ([str(i) for i in item_ids],),
        )

    def mark_sent(self, cur: Cursor, item_ids: Sequence[uuid.UUID]) -> None:
        # Only from pending: capture may already have seen the job picked up.
        cur.execute(
            f"UPDATE {self.items} SET state = 'sent', sent_at = now(), last_error = NULL, updated_at = now() "
            "WHERE id = ANY(%s::uuid[]) AND state = 'pending'",
            ([str(i) for i in item_ids],),
        )

    def mark_retry(self, cur: Cursor, item_id: uuid.UUID, error: str, delay_s: float) -> None:
        cur.execute(
            f"UPDATE {self.items} SET last_error = %s, next_attempt_at = now() + make_interval(secs => %s), updated_at = now() "
            "WHERE id = %s AND state = 'pending'",
            (error[:2000], delay_s, str(item_id)),
        )

    def mark_final(self, cur: Cursor, item_id: uuid.UUID, state: str, reason: str) -> None:
        cur.execute(
            f"UPDATE {self.items} SET state = %s, reason = %s, last_error = CASE WHEN %s = 'failed' THEN %s ELSE last_error END, "
            "updated_at = now() WHERE id = %s AND state = 'pending'",
            (state, reason[:2000], state, reason[:2000], str(item_id)),
        )

    def finish(self, cur: Cursor) -> list[str]:
        """Running actions with nothing left to send are done (or failed, when the owner refused
        every item it was handed)."""
        cur.execute(
            f"""
            UPDATE {self.actions} a SET
                state = CASE WHEN EXISTS (SELECT 1 FROM {self.items} i WHERE i.action_id = a.id AND i.state = 'failed')
                              AND NOT EXISTS (SELECT 1 FROM {self.items} i WHERE i.action_id = a.id AND i.state IN ('sent', 'picked_up'))
                         THEN 'failed' ELSE 'done' END,
                finished_at = now(), updated_at = now()
            WHERE a.state = 'running' AND NOT EXISTS (SELECT 1 FROM {self.items} i WHERE i.action_id = a.id AND i.state = 'pending')
            RETURNING a.id::text AS id
            """
        )
        return [str(row["id"]) for row in cur.fetchall()]

    def report_overdue(self, cur: Cursor, timeout_s: float) -> list[str]:
        """Sent items not picked up within `timeout_s`, marked once; their actions."""
        cur.execute(
            f"""
            UPDATE {self.items} SET overdue_at = now(), updated_at = now()
            WHERE state = 'sent' AND overdue_at IS NULL AND sent_at < now() - make_interval(secs => %s)
            RETURNING action_id::text AS action_id
            """,
            (timeout_s,),
        )
        return sorted({str(row["action_id"]) for row in cur.fetchall()})

    # -- capture (outcome.py) ------------------------------------------------------------------
    def record_pickups(self, cur: Cursor, left_failed: dict[str, str]) -> list[str]:
        """Items of these jobs (job row id -> the status capture saw) whose send began are
        picked up; their actions."""
        if not left_failed:
            return []
        cur.execute(
            f"""
            UPDATE {self.items} i SET state = 'picked_up', picked_up_at = now(), picked_up_status = seen.status, updated_at = now()
            FROM unnest(%s::uuid[], %s::varchar[]) AS seen(job_row_id, status)
            WHERE i.job_row_id = seen.job_row_id AND i.state IN ('pending', 'sent') AND i.attempted_at IS NOT NULL
            RETURNING i.action_id::text AS action_id
            """,
            (list(left_failed), list(left_failed.values())),
        )
        return sorted({str(row["action_id"]) for row in cur.fetchall()})

    # -- events --------------------------------------------------------------------------------
    def progress_events(self, cur: Cursor, action_ids: Sequence[str], step: str) -> list[NewEvent]:
        """One job-action event per action: its state and counts now (`step` says what moved)."""
        events = []
        for action_id in action_ids:
            action = self.get(cur, action_id)
            if action is None:
                continue
            payload = {"event": step, "action": action, "timestamp": utc_now_iso()}
            events.append(NewEvent(JOB_ACTION, step, payload, f"job-action:{action_id}:{uuid.uuid4()}"))
        return events


def action_json(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """An action as the API and the job-action event show it (JSON-ready)."""

    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "state": row["state"],
        "reason": row["reason"],
        "requested_by": {"id": str(row["requested_by"]), "email": row["requested_by_email"], "user_type": row["role"]},
        "filter": row["filter"],
        "total": row["total"],
        "counts": counts,
        "transport": row["transport"],
        "created_at": stamp(row["created_at"]),
        "started_at": stamp(row["started_at"]),
        "finished_at": stamp(row["finished_at"]),
        "cancelled_by": str(row["cancelled_by"]) if row["cancelled_by"] else None,
    }


def item_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, uuid.UUID) else value)
        for key, value in row.items()
    }
