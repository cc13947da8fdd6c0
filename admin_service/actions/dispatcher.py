"""The dispatcher: one process across all workers and instances hands pending items to the
platform, like capture's leader (a PostgreSQL advisory lock held by its own connection; when
it dies another takes over within LEADER_RETRY_S and resumes from the items' states).

At least once: an item's attempt is stamped before its send and it becomes `sent` only after
the transport confirmed it, so a crash between the two sends it again, with the same item id
as idempotency key (the owner does it once). Rate-limited (ACTION_RATE_PER_S); while the target
is down, the dispatcher backs off (doubling up to ACTION_BACKOFF_MAX_S) and each item's next
attempt is put off the same way. Before each send the job's row is read again: a job no longer
failed is skipped (someone else retried it), so this dispatcher never re-runs a running job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2.extras

from admin_service.actions.demo_executor import DemoExecutor
from admin_service.actions.store import NO_LONGER_FAILED, ActionStore
from admin_service.actions.transports import (
    AMQP,
    DEMO,
    HTTP,
    NOT_CONFIGURED,
    AmqpTransport,
    Command,
    HttpTransport,
    Refused,
    Retry,
    Transport,
    configured_transport,
)
from admin_service.config import Settings
from admin_service.db.dbapi import Connection, Cursor
from admin_service.db.tables import JOBS_TABLE
from admin_service.live.connection import keep_connected, transaction, wait_for_notify
from admin_service.live.log import EventLog, NewEvent

log = logging.getLogger("admin_service.actions")

LEADER_RETRY_S = 2.0
# The action routes NOTIFY this at commit: a new action starts at once, not at the next poll.
ACTIONS_CHANNEL = "admin_service_actions"
IDLE_POLL_S = 1.0
HOUSEKEEPING_S = 2.0
CHUNK_MAX = 200  # items stamped and recorded per transaction, at most
IDEMPOTENCY_KEEP_S = 24 * 3600
STARTED, PROGRESS, DONE, OVERDUE = "started", "progress", "done", "overdue"


def lock_key(schema: str) -> int:
    return zlib.crc32(f"admin-service-dispatch:{schema}".encode())


def make_transport(settings: Settings, database_url: str) -> Transport:
    kind = configured_transport(settings)
    if kind == AMQP:
        return AmqpTransport(settings)
    if kind == HTTP:
        return HttpTransport(settings)
    if kind == DEMO:
        return DemoExecutor(settings, database_url)
    raise RuntimeError(NOT_CONFIGURED)


class Pace:
    """At most `rate` sends a second, without bursts beyond a tenth of a second's worth."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        now = time.monotonic()
        self.next_at = max(self.next_at, now - 0.1)
        if self.next_at > now:
            stop.wait(self.next_at - now)
        self.next_at += self.interval


class Dispatcher:
    def __init__(self, settings: Settings, database_url: str, event_log: EventLog) -> None:
        self.settings = settings
        self.database_url = database_url
        self.log = event_log
        self.store = ActionStore(settings.admin_schema)
        self.is_leader = False
        self.transport: Transport | None = None
        self._down_s = 0.0

    def run(self, stop: threading.Event) -> None:
        if configured_transport(self.settings) is None:
            return  # nothing can be sent; the routes refuse new actions (503)
        keep_connected("dispatch", self.settings, self.database_url, stop, lambda conn: self._session(conn, stop), LEADER_RETRY_S)

    def _session(self, conn: Connection, stop: threading.Event) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.settings.admin_schema),))
            if not cur.fetchone()[0]:
                return
        self.is_leader = True
        log.info("action dispatch leadership acquired", extra={"fields": {"pid": os.getpid()}})
        try:
            if self.transport is None:
                self.transport = make_transport(self.settings, self.database_url)
            with conn.cursor() as cur:
                cur.execute(f'LISTEN "{ACTIONS_CHANNEL}"')
            self._lead(conn, stop, self.transport)
        finally:
            log.info("action dispatch leadership released")
            self.is_leader = False
            if self.transport is not None:
                self.transport.close()

    def _lead(self, conn: Connection, stop: threading.Event, transport: Transport) -> None:
        pace = Pace(self.settings.action_rate_per_s)
        next_housekeeping = 0.0
        batch_size = max(1, min(1000, int(self.settings.action_rate_per_s)))
        while not stop.is_set():
            if time.monotonic() >= next_housekeeping:
                self.housekeeping(conn)
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                items = self.store.due(cur, batch_size)
            if not items:
                transport.idle()
                wait_for_notify(conn, min(IDLE_POLL_S, max(0.05, next_housekeeping - time.monotonic())))
                continue
            down = self.dispatch(conn, items, transport, pace, stop)
            if down:
                self._down_s = min(self.settings.action_backoff_max_s, max(0.5, self._down_s * 2))
                log.warning("action target down, backing off %.1f s", self._down_s)
                stop.wait(self._down_s)
            else:
                self._down_s = 0.0

    def dispatch(
        self, conn: Connection, items: list[dict[str, Any]], transport: Transport, pace: Pace, stop: threading.Event
    ) -> bool:
        """Send these items in order; True when the target turned out to be down (the rest wait)."""
        jobs = self._jobs_now(conn, [item["job_row_id"] for item in items])
        sendable: list[dict[str, Any]] = []
        already: list[Any] = []
        touched: set[str] = set()
        with self._tx(conn) as cur:
            for item in items:
                job = jobs.get(str(item["job_row_id"]))
                status = job["status"] if job else "deleted"
                if status == "failed":
                    sendable.append(item)
                elif item["attempts"] == 0:
                    self.store.mark_final(cur, item["id"], "skipped", NO_LONGER_FAILED.format(status=status))
                    touched.add(str(item["action_id"]))
                else:
                    # An earlier attempt got through (its confirm was lost in a crash): it is sent;
                    # capture marks it picked up, if it has not already.
                    already.append(item["id"])
                    touched.add(str(item["action_id"]))
        self._flush(conn, already, touched)
        # Chunks of about a fifth of a second of sends: one transaction stamps a chunk's attempts
        # and one records its confirms (a transaction per item cost more than the send).
        chunk_size = max(1, min(CHUNK_MAX, int(self.settings.action_rate_per_s / 5)))
        for start in range(0, len(sendable), chunk_size):
            if stop.is_set():
                return False
            if self._send_chunk(conn, sendable[start : start + chunk_size], jobs, transport, pace, stop):
                return True
        return False

    def _send_chunk(
        self,
        conn: Connection,
        chunk: list[dict[str, Any]],
        jobs: dict[str, dict[str, Any]],
        transport: Transport,
        pace: Pace,
        stop: threading.Event,
    ) -> bool:
        with self._tx(conn) as cur:
            self.log.lock_for_append(cur)  # before the items: capture's lock order
            started = self.store.begin_attempt(cur, [item["id"] for item in chunk])
            self.log.append_and_notify(cur, self.store.progress_events(cur, started, STARTED))
        sent: list[Any] = []
        touched: set[str] = set()
        down = False
        for index, item in enumerate(chunk):
            touched.add(str(item["action_id"]))
            if stop.is_set():
                self._release(conn, chunk[index:])
                break
            pace.wait(stop)
            try:
                transport.send(self._command(item, jobs.get(str(item["job_row_id"]))))
            except Retry as exc:
                delay = min(self.settings.action_backoff_max_s, 2.0 ** min(item["attempts"], 10))
                with self._tx(conn) as cur:
                    self.store.mark_retry(cur, item["id"], str(exc), delay)
                if exc.down:
                    down = True
                    self._release(conn, chunk[index + 1 :])
                    break
                continue
            except Refused as exc:
                with self._tx(conn) as cur:
                    self.store.mark_final(cur, item["id"], "failed", str(exc))
                continue
            sent.append(item["id"])
        self._flush(conn, sent, touched)
        return down

    def _release(self, conn: Connection, items: list[dict[str, Any]]) -> None:
        """Items of a chunk never sent (the target went down, or the process is stopping): their
        stamped attempt did not happen."""
        if items:
            with self._tx(conn) as cur:
                self.store.release(cur, [item["id"] for item in items])

    def _flush(self, conn: Connection, sent: list[Any], touched: set[str]) -> None:
        """Record the confirmed sends and publish each touched action's progress, in one transaction."""
        if not sent and not touched:
            return
        with self._tx(conn) as cur:
            self.log.lock_for_append(cur)
            if sent:
                self.store.mark_sent(cur, sent)
            finished = set(self.store.finish(cur))
            events: list[NewEvent] = self.store.progress_events(cur, sorted(touched - finished), PROGRESS)
            events += self.store.progress_events(cur, sorted(finished), DONE)
            self.log.append_and_notify(cur, events)

    def housekeeping(self, conn: Connection) -> None:
        """Report sent items not picked up in time, finish what is finished, forget old
        Idempotency-Key answers."""
        with self._tx(conn) as cur:
            self.log.lock_for_append(cur)
            overdue = self.store.report_overdue(cur, self.settings.action_pickup_timeout_s)
            finished = self.store.finish(cur)
            events = self.store.progress_events(cur, overdue, OVERDUE) + self.store.progress_events(cur, finished, DONE)
            self.log.append_and_notify(cur, events)
            cur.execute(
                f'DELETE FROM "{self.settings.admin_schema}".idempotency_keys WHERE created_at < now() - make_interval(secs => %s)',
                (IDEMPOTENCY_KEEP_S,),
            )

    def _jobs_now(self, conn: Connection, job_row_ids: list[Any]) -> dict[str, dict[str, Any]]:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                f"SELECT id::text AS id, status, user_id FROM {JOBS_TABLE} WHERE id = ANY(%s::uuid[])",
                ([str(j) for j in job_row_ids],),
            )
            return {row["id"]: dict(row) for row in cur.fetchall()}

    @staticmethod
    def _command(item: dict[str, Any], job: dict[str, Any] | None) -> Command:
        return Command(
            action_id=str(item["action_id"]),
            item_id=str(item["id"]),
            kind=item["kind"],
            job_row_id=str(item["job_row_id"]),
            job_id=item["job_id"],
            user_id=str(job["user_id"]) if job and job.get("user_id") else None,
            requested_by={"id": str(item["requested_by"]), "email": item["requested_by_email"]},
            reason=item["reason"],
            requested_at=item["requested_at"].isoformat(),
        )

    @staticmethod
    @contextmanager
    def _tx(conn: Connection) -> Iterator[Cursor]:
        """A dict cursor in one transaction."""
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur, transaction(cur):
            yield cur
