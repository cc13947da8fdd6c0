"""The notification outbox (ADMIN_SCHEMA.alert_deliveries): the one owner of its SQL.

A delivery is one message to one channel. It is written in the transaction that records the
alert's change (live/episodes.py), so a change is never recorded without its messages nor a
message queued for a change that rolled back; the dispatcher (dispatcher.py) sends it at least
once. Its `delivery_id` goes out in the X-Delivery-Id header: a receiver that saw it before
(a retry after a timeout, a send cut short by a failover) drops the repeat.

States: pending (to send; `next_attempt_at` says when) -> delivered, or dead after
NOTIFY_MAX_ATTEMPTS; held: never sent, by storm control (`held_reason`; a digest tells those
the window held back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg2.extras
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import text

from admin_service.config import Settings
from admin_service.db.dbapi import Cursor

# The channel the dispatcher LISTENs on; a transaction that queues a delivery NOTIFYs it (at commit).
OUTBOX_CHANNEL = "admin_service_alert_outbox"
PENDING, DELIVERED, DEAD, HELD = "pending", "delivered", "dead", "held"
RAISED, RESOLVED, ESCALATION, DIGEST, TEST = "raised", "resolved", "escalation", "digest", "test"
RESOLVED_FIRST = "resolved before it was sent"
WINDOW = "window"
NOT_CONFIGURED = "channel no longer configured"
ERROR_MAX = 2000


class Outbox:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = f'"{settings.admin_schema}".alert_deliveries'

    def _dict_cursor(self, cur: Cursor) -> Cursor:
        return cur.connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor)

    # -- queuing (in the transaction of the change) ----------------------------------------------
    def _insert(
        self,
        cur: Cursor,
        episode_id: int | None,
        channel: str,
        kind: str,
        alert_type: str | None,
        message: Mapping[str, Any],
        not_before: datetime | None = None,
    ) -> None:
        with cur.connection.cursor() as plain:
            plain.execute(
                f"INSERT INTO {self.table} (episode_id, channel, kind, alert_type, message, next_attempt_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, COALESCE(%s, now()))",
                (episode_id, channel, kind, alert_type, json.dumps(message, default=str), not_before),
            )
            plain.execute("SELECT pg_notify(%s, '')", (OUTBOX_CHANNEL,))

    def announce_raise(self, cur: Cursor, alert: Mapping[str, Any], not_before: datetime | None = None) -> int:
        """A message to every channel that wants this alert; `not_before` defers them (flapping)."""
        channels = self.settings.notify.matching(alert["type"], alert["severity"])
        for channel in channels:
            message = {"alert": dict(alert), "flapping": not_before is not None}
            self._insert(cur, int(alert["id"]), channel.name, RAISED, alert["type"], message, not_before)
        return len(channels)

    def announce_resolution(self, cur: Cursor, alert: Mapping[str, Any]) -> int:
        """A "resolved after N min" to each channel that was told of the alert (or is still being
        told: a receiver that is down gets both, in order). A raise not yet sent is dropped with
        it (a flapping rule that cleared within its gap: nobody hears of it); one the window
        held back is told by the digest."""
        episode_id = int(alert["id"])
        with cur.connection.cursor() as plain:
            plain.execute(
                f"UPDATE {self.table} SET status = %s, held_reason = %s WHERE episode_id = %s AND kind = %s "
                "AND status = %s AND attempts = 0",
                (HELD, RESOLVED_FIRST, episode_id, RAISED, PENDING),
            )
            plain.execute(
                f"SELECT DISTINCT channel FROM {self.table} WHERE episode_id = %s AND kind = %s AND status <> %s",
                (episode_id, RAISED, HELD),
            )
            told = sorted(str(row[0]) for row in plain.fetchall())
        sent = 0
        for name in told:
            if self.settings.notify.channel(name) is None:
                continue
            self._insert(cur, episode_id, name, RESOLVED, alert["type"], {"alert": dict(alert)})
            sent += 1
        return sent

    def queue_escalation(self, cur: Cursor, alert: Mapping[str, Any], channel: str, number: int, of: int) -> None:
        message = {"alert": dict(alert), "escalation": number, "of": of}
        self._insert(cur, int(alert["id"]), channel, ESCALATION, alert["type"], message)

    # -- the dispatcher ------------------------------------------------------------------------
    def claim(self, cur: Cursor, limit: int, first_retry_s: float, max_retry_s: float) -> list[dict[str, Any]]:
        """Up to `limit` due deliveries, each counted as an attempt and its next attempt set
        (exponential backoff: first_retry_s doubling up to max_retry_s, with "equal jitter":
        a random part of up to half of it taken off, so retries of many messages spread out) before it is sent: if the sender dies mid-send, the next dispatcher
        sends it again then. A channel's messages of one episode go in order (a resolution
        waits for its raise)."""
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                WITH due AS (
                    SELECT d.id FROM {self.table} d
                    WHERE d.status = %(pending)s AND d.next_attempt_at <= now()
                      AND NOT EXISTS (
                          SELECT 1 FROM {self.table} p
                          WHERE p.episode_id = d.episode_id AND p.channel = d.channel AND p.id < d.id AND p.status = %(pending)s
                      )
                    ORDER BY d.next_attempt_at, d.id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE {self.table} t SET attempts = t.attempts + 1,
                    next_attempt_at = now() + make_interval(
                        secs => LEAST(%(max)s, %(first)s * power(2, t.attempts)) * (1 - random() / 2))
                FROM due WHERE t.id = due.id
                RETURNING t.id, t.delivery_id::text AS delivery_id, t.episode_id, t.channel, t.kind, t.alert_type,
                    t.message, t.status, t.attempts, t.next_attempt_at, t.last_error, t.created_at
                """,
                {"pending": PENDING, "limit": limit, "max": max_retry_s, "first": first_retry_s},
            )
            rows: list[dict[str, Any]] = sorted(dcur.fetchall(), key=lambda r: r["id"])
            return rows

    def next_due_in(self, cur: Cursor) -> float | None:
        """Seconds until the next pending delivery is due (None: none pending)."""
        cur.execute(f"SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM {self.table} WHERE status = %s", (PENDING,))
        row = cur.fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def delivered(self, cur: Cursor, delivery: int) -> None:
        cur.execute(
            f"UPDATE {self.table} SET status = %s, delivered_at = now(), last_error = NULL WHERE id = %s AND status = %s",
            (DELIVERED, delivery, PENDING),
        )

    def failed(self, cur: Cursor, delivery: int, error: str, dead: bool) -> None:
        cur.execute(
            f"UPDATE {self.table} SET status = %s, last_error = %s WHERE id = %s AND status = %s",
            (DEAD if dead else PENDING, error[:ERROR_MAX], delivery, PENDING),
        )

    def window_taken(self, cur: Cursor, channel: str, alert_type: str, window_s: float, delivery: int) -> datetime | None:
        """When this channel's last new-alert message of this type went out, if within the window."""
        cur.execute(
            f"SELECT max(delivered_at) FROM {self.table} WHERE channel = %s AND alert_type = %s AND kind = %s "
            "AND status = %s AND delivered_at > now() - make_interval(secs => %s) AND id <> %s",
            (channel, alert_type, RAISED, DELIVERED, window_s, delivery),
        )
        row = cur.fetchone()
        found: datetime | None = None if row is None else row[0]
        return found

    def hold_for_digest(self, cur: Cursor, delivery: Mapping[str, Any], send_at: datetime) -> None:
        """Hold this new-alert message back; the channel's pending digest of its type (one is made,
        due at `send_at`, when none is) will tell it."""
        cur.execute(
            f"SELECT id FROM {self.table} WHERE channel = %s AND alert_type = %s AND kind = %s AND status = %s LIMIT 1",
            (delivery["channel"], delivery["alert_type"], DIGEST, PENDING),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                f"INSERT INTO {self.table} (channel, kind, alert_type, message, next_attempt_at) "
                "VALUES (%s, %s, %s, '{}'::jsonb, %s) RETURNING id",
                (delivery["channel"], DIGEST, delivery["alert_type"], send_at),
            )
            row = cur.fetchone()
        cur.execute(
            f"UPDATE {self.table} SET status = %s, held_reason = %s, digest_id = %s WHERE id = %s",
            (HELD, WINDOW, int(row[0]), delivery["id"]),
        )

    def digest_items(self, cur: Cursor, digest: int) -> list[dict[str, Any]]:
        """The held messages a digest tells, oldest first, with their episodes' state now."""
        schema = self.settings.admin_schema
        with self._dict_cursor(cur) as dcur:
            dcur.execute(
                f"""
                SELECT d.message -> 'alert' AS alert, e.status AS status_now
                FROM {self.table} d LEFT JOIN "{schema}".alert_episodes e ON e.id = d.episode_id
                WHERE d.digest_id = %s ORDER BY d.id
                """,
                (digest,),
            )
            return list(dcur.fetchall())

    # -- reading (REST) -----------------------------------------------------------------------------
    def for_episode(self, conn: SqlConnection, episode_id: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            text(
                f"SELECT id, delivery_id::text AS delivery_id, channel, kind, status, attempts, last_error, held_reason, "
                f"created_at, next_attempt_at, delivered_at FROM {self.table} WHERE episode_id = :id ORDER BY id"
            ),
            {"id": episode_id},
        )
        out = []
        for row in rows.mappings():
            item = dict(row)
            if item["status"] != PENDING:
                item["next_attempt_at"] = None
            out.append(item)
        return out
