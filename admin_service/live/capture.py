"""Change capture: one leader across all workers and instances turns changed job rows
into events in the log.

Leadership is a PostgreSQL advisory lock held by the leader's own connection: when the
leader dies its connection closes, the lock is released, and another process takes over
within LEADER_RETRY_S. Changes are found by polling (live/polling.py: new jobs by `created_at`,
open jobs by status, jobs that left the open set by primary key) from a watermark read with an
overlap window, so a transaction that commits late with an older timestamp is still seen; the
unique dedupe key makes re-reading the overlap harmless. That is state sampling: two changes of
a job between two passes are one event. With the change-capture trigger installed (or
CAPTURE_MODE=exact) the leader logs every change instead (live/changes.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg2.extras

from admin_service import metrics
from admin_service.actions.outcome import pickup_events
from admin_service.clock import utc
from admin_service.config import Settings
from admin_service.db.dbapi import Connection, Cursor
from admin_service.jobs.days import ClosedDays, touched_days
from admin_service.jobs.serialize import job_json
from admin_service.jobs.stats import STATUS_COUNTS, StatusCounts, count_key, counted
from admin_service.jobs.status import TERMINAL, Transition, normalize
from admin_service.live import alerts, polling
from admin_service.live.changes import EXACT, POLL, ChangeConsumer, choose_mode, state_key
from admin_service.live.connection import keep_connected, transaction, wait_for_notify
from admin_service.live.episodes import Episodes
from admin_service.live.log import CHANGES_CHANNEL, MODE_CHANGED, EventLog, NewEvent
from admin_service.names import JOB_UPDATE

log = logging.getLogger("admin_service.capture")

LEADER_RETRY_S = 2.0
BATCH = 5000
PRUNE_EVERY_S = 3600


def lock_key(schema: str) -> int:
    return zlib.crc32(f"admin-service-capture:{schema}".encode())


class LRU(OrderedDict[str, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def event_kind(status: str, previous: str | None, created_at: datetime, updated_at: datetime) -> str:
    if status in TERMINAL and previous != status:
        return status
    if previous is None and updated_at - created_at < timedelta(seconds=1):
        return "created"
    return "updated"


class Capturer:
    def __init__(self, settings: Settings, database_url: str, event_log: EventLog) -> None:
        self.settings = settings
        self.database_url = database_url
        self.log = event_log
        self.is_leader = False
        self.captured_total = 0
        self.episodes = Episodes(settings)
        self.changes = ChangeConsumer(settings, event_log, self.episodes)
        self.mode: str | None = None  # the leader's: POLL (sampling rows) or EXACT (every change)
        # Bounded memory (full, the two took ~92 MiB at 100k/200k entries: the soak's finding).
        # The keys only need to cover the overlap window (CAPTURE_OVERLAP_S of changes; the
        # event log's unique key rejects any repeat anyway); a job missing from the statuses is
        # looked up in the log, one query per capture pass.
        self._recent_keys: LRU = LRU(20_000)
        self._last_status: LRU = LRU(50_000)
        self._open_jobs = polling.OpenJobs()
        self.counts = StatusCounts(settings.admin_schema)
        self.closed_days = ClosedDays(settings.admin_schema, version="")  # marks any version's days

    # -- leadership loop -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        keep_connected("capture", self.settings, self.database_url, stop, lambda conn: self._session(conn, stop), LEADER_RETRY_S)

    def _session(self, conn: Connection, stop: threading.Event) -> None:
        """Lead while this connection holds the lock (closing it releases the lock)."""
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.log.schema),))
            if not cur.fetchone()[0]:
                return
        self.is_leader = True
        metrics.CAPTURE_LEADER.set(1)
        log.info("capture leadership acquired", extra={"fields": {"pid": os.getpid()}})  # which worker leads
        try:
            self._lead(conn, stop)
        finally:
            log.info("capture leadership released")
            self.is_leader = False
            self.mode = None
            metrics.CAPTURE_LEADER.set(0)

    def _lead(self, conn: Connection, stop: threading.Event) -> None:
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{CHANGES_CHANNEL}"')
        self._recent_keys.clear()
        self._last_status.clear()
        with conn.cursor() as cur:
            self._open_jobs.start(self.log.open_jobs(cur, polling.OPEN_STATUSES))
        next_alerts = 0.0
        next_prune = 0.0
        next_mode = 0.0
        next_reconcile = 0.0
        poll_s = self.settings.capture_poll_ms / 1000
        heard: set[str] = set()  # the payloads of the NOTIFYs that woke this loop
        while not stop.is_set():
            if MODE_CHANGED in heard or time.monotonic() >= next_mode:
                was = self.mode
                self._check_mode(conn)
                # At once when `db install-change-capture` (or its --drop) says so (MODE_CHANGED).
                next_mode = time.monotonic() + self.settings.capture_mode_check_s
                if self.mode != was:
                    # A new leader, or a mode switch (whose hand-over passes may both have moved
                    # the counts for one change): count once before counting on the changes.
                    next_reconcile = 0.0
            if self.mode == EXACT:
                self.captured_total += self.changes.consume(conn)
            else:
                self.capture_once(conn)
            if time.monotonic() >= next_reconcile:
                self.reconcile(conn)
                next_reconcile = time.monotonic() + self.settings.stats_reconcile_s
            now = time.monotonic()
            if now >= next_alerts:
                self.evaluate_alerts(conn)
                next_alerts = now + self.settings.alert_interval_s
            if now >= next_prune:
                with conn.cursor() as cur:
                    self.log.prune(cur, self.settings.event_retention_days)
                next_prune = now + PRUNE_EVERY_S
            timeout = min(poll_s, max(0.05, next_alerts - time.monotonic()))
            heard.clear()
            if self.mode == EXACT:
                self.changes.wait(conn, timeout, heard)
            else:
                wait_for_notify(conn, timeout, heard)

    def _check_mode(self, conn: Connection) -> None:
        """Capture exactly when the change-capture trigger is installed (CAPTURE_MODE=auto), by
        polling otherwise, and hand over between the two without losing what the other had."""
        with conn.cursor() as cur:
            mode, installed = choose_mode(cur, self.settings)
            last = self.log.leader_mode(cur)  # the mode of the last leader, in whichever process
        if mode != last:
            if mode == EXACT:
                # Changes committed before the trigger existed are only in the rows: one last
                # sampling pass (CREATE TRIGGER waited for every writer then in flight).
                self.capture_once(conn)
            elif last == EXACT:
                self.captured_total += self.changes.consume(conn)  # recorded before the drop
            with conn.cursor() as cur:
                self.log.set_leader_mode(cur, mode)
        if mode != self.mode:
            log.info("capture mode: %s", mode)
            if mode == EXACT and not installed:
                log.warning("CAPTURE_MODE=exact, but the change-capture trigger is not installed: nothing is captured")
            if mode == POLL and installed:
                log.warning("CAPTURE_MODE=poll, but the change-capture trigger is installed: its change table grows unread")
        self.mode = mode

    # -- one pass ------------------------------------------------------------------------
    def capture_once(self, conn: Connection) -> int:
        """One polling pass (live/polling.py): new jobs since the watermark (minus the overlap),
        open jobs changed since then and jobs no longer open (by primary key); log their events,
        one transaction per page (one in all unless new jobs fill more than a page)."""
        overlap = timedelta(seconds=self.settings.capture_overlap_s)
        since: datetime | None = None
        scan = polling.Pass(self._open_jobs, BATCH)
        total = 0
        while not scan.done:
            rows, since = self._capture_page(conn, since, overlap, scan.rows)
            total += len(rows)
        # Only now: had a page failed, the next pass would look for the jobs that left again.
        self._open_jobs.commit(scan.seen)
        return total

    def _capture_page(
        self,
        conn: Connection,
        since: datetime | None,
        overlap: timedelta,
        fetch: Callable[[Cursor, datetime], list[dict[str, Any]]],
    ) -> tuple[list[dict[str, Any]], datetime]:
        """One page of changed rows in one transaction; (rows, the pass's lower bound)."""
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur, transaction(cur):
            watermark = self.log.lock_watermark(cur, overlap)
            if since is None:
                since = watermark - overlap
            rows = fetch(cur, since)
            events, changes = self._events_for(cur, rows)
            events += pickup_events(cur, self.log.schema, events)
            ids = self.log.append_and_notify(cur, events)
            self.counts.apply(cur, [transition for transition, _ in changes])
            # The closed days whose figures these changes may move are rolled up again.
            self.closed_days.mark(cur, touched_days(changes))
            if rows:
                newest = max(utc(r["updated_at"]) for r in rows)
                # Never move past the database clock: a row stamped in the future must not hide others.
                self.log.advance_watermark(cur, min(newest, utc(rows[0]["db_now"])))
        for event in events:
            self._recent_keys.remember(event.dedupe_key, True)
            if event.event == JOB_UPDATE and event.job_row_id:
                self._last_status.remember(event.job_row_id, event.status)
        self.captured_total += len(ids)
        metrics.capture_logged(rows, events, len(ids))
        return rows, since

    def _fresh(self, cur: Cursor, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
        """The rows whose state is not logged yet (as far as this leader knows), with their
        status and dedupe key; the jobs' last logged statuses loaded into _last_status."""
        fresh = []
        for row in rows:
            status = normalize(row["status"]) or "queued"
            key = state_key(row["id"], row["updated_at"], status)
            if key not in self._recent_keys:
                fresh.append((row, status, key))
        unknown = [str(r["id"]) for r, _, _ in fresh if str(r["id"]) not in self._last_status]
        if unknown:
            for job_id, status in self.log.last_statuses(cur, unknown).items():
                self._last_status.remember(job_id, status)
        return fresh

    @staticmethod
    def _transition(row: dict[str, Any], previous: str | None) -> Transition:
        """How logging this sampled state moves the counts per status: from the job's last
        logged status, or as a new job when the log never saw it (right for an insert; for an
        older job the log does not know, its old status stays counted: drift until the next
        reconciliation)."""
        return (count_key(previous) if previous is not None else None), count_key(row["status"])

    def _events_for(
        self, cur: Cursor, rows: list[dict[str, Any]]
    ) -> tuple[list[NewEvent], list[tuple[Transition, datetime | None]]]:
        """The events of the rows not logged yet, and their changes (transition of the counts
        per status, the job's created_at)."""
        fresh = self._fresh(cur, rows)
        events: list[NewEvent] = []
        transitions: list[tuple[Transition, datetime | None]] = []
        finished: list[dict[str, Any]] = []
        for row, status, key in fresh:
            job_id = str(row["id"])
            previous = self._last_status.get(job_id)
            transitions.append((self._transition(row, previous), row["created_at"]))
            kind = event_kind(status, previous, utc(row["created_at"]), utc(row["updated_at"]))
            snapshot = job_json(row)  # the job as REST returns it
            payload = {"event": kind, "job": snapshot, "timestamp": snapshot["updated_at"]}
            events.append(NewEvent(JOB_UPDATE, kind, payload, key, job_id, status))
            self._last_status.remember(job_id, status)
            if kind == "failed":
                finished.append({**row, "status": status})
        raised = alerts.job_alerts(finished, self.settings)
        # Their episodes (and notifications) in this same transaction, logged right after them.
        return [*events, *raised, *self.episodes.follow(cur, raised)], transitions

    # -- the counts per status -----------------------------------------------------------
    def reconcile(self, conn: Connection) -> dict[str, int]:
        """Replace the maintained counts per status by a full count; what they were off by.

        Why no change is counted twice or missed across it. Only this leader's transactions
        move the counts (capture applies a change's transition in the transaction that logs
        it, StatusCounts.apply), and this runs in the leader's own loop between two of them: at
        its start the counts are exactly "the full count at the previous reconciliation plus
        every logged change since". In one REPEATABLE READ snapshot S it then counts the table
        and lists what capture has still to apply of the changes S already shows: in exact mode
        the change rows not consumed yet (each moves the counts once when consumed, and is
        visible in S exactly when its job's row change is); in polling mode the rows a pass
        would read now whose state is not logged (each with the transition capture will apply,
        from the same last logged status). The new counts are the count minus those pending
        transitions, so once capture applies them the counts equal the table as of S plus the
        changes after S. A change committed after S is neither in the count nor pending: capture
        applies it later, once. A change committed before S is in the count and, if not logged
        yet, pending: applied later and subtracted now, so counted once. If the leader dies
        mid-way the transaction rolls back and the old counts stand.

        Left to the next reconciliation (polling only: it samples states): changes polling never
        sees (a closed job edited, a delete), the first logged change of a job the log never saw
        that is not its insertion (e.g. a job older than the log), a row committed later than
        CAPTURE_OVERLAP_S after its updated_at. (A switch of mode, where the last sampling pass and
        the change rows may both move the counts for one change, is followed by a reconciliation.)"""
        started = time.monotonic()
        overlap = timedelta(seconds=self.settings.capture_overlap_s)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try:
                watermark = self.log.lock_watermark(cur, overlap)  # the snapshot starts here
                with conn.cursor() as plain:
                    plain.execute(STATUS_COUNTS.text)
                    by_status, total = counted(plain.fetchall())
                table = Counter({name: n for name, n in by_status.items()})
                table[""] = total - sum(by_status.values())  # NULL or unknown statuses
                pending = self.changes.pending(cur) if self.mode == EXACT else self._pending_samples(cur, watermark - overlap)
                for (before, after), n in pending:
                    if before is not None:
                        table[before] += n
                    if after is not None:
                        table[after] -= n
                drift = self.counts.replace(cur, {k: int(n) for k, n in table.items()}, self.mode)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        metrics.STATS_QUERY_SECONDS.labels("reconcile").inc(time.monotonic() - started)
        if drift:
            log.info("counts per status reconciled", extra={"fields": {"drift": drift}})
        return drift

    def _pending_samples(self, cur: Cursor, since: datetime) -> list[tuple[Transition, int]]:
        """The transitions the next polling pass would apply, read in the caller's snapshot (a
        pass of our own, on a copy of the open set: nothing is logged or remembered)."""
        scan = polling.Pass(polling.OpenJobs(set(self._open_jobs.ids), self._open_jobs.fingerprint), BATCH)
        rows: list[dict[str, Any]] = []
        while not scan.done:
            rows += scan.rows(cur, since)
        pending: Counter[Transition] = Counter()
        fresh = self._fresh(cur, rows)
        logged = self.log.logged_keys(cur, [key for _, _, key in fresh])
        for row, _, key in fresh:
            if key not in logged:
                pending[self._transition(row, self._last_status.get(str(row["id"])))] += 1
        return list(pending.items())

    def evaluate_alerts(self, conn: Connection) -> None:
        with conn.cursor() as cur, transaction(cur):
            events = alerts.evaluate_rules(cur, self.settings)
            ids = self.log.append_and_notify(cur, [*events, *self.episodes.follow(cur, events)])
        metrics.EVENTS_LOGGED.inc(len(ids))
