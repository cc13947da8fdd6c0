"""Exact capture: every committed change of a job, logged once, in each job's commit order.

The opt-in row trigger (`python -m admin_service db install-change-capture`, DDL in
db/archive_options.py) appends each INSERT, shown-column UPDATE and DELETE of
archive.analysis_jobs to ADMIN_SCHEMA.job_changes in the writer's own transaction: a change
exists there exactly when its transaction committed, whether or not the service was running.
The capture leader (live/capture.py) turns those rows into job-update events and deletes them
in one transaction, so a leader that dies mid-page leaves the page for the next one: nothing
is logged twice and nothing is lost.

Why nothing is skipped and each job's order holds, without a horizon or a watermark:
- Nothing is skipped. There is no high-water mark to move past a row: a page is the oldest
  committed rows still in the table, and a row leaves the table only in the transaction that
  logged its event. A transaction that commits late is simply read by the first pass after its
  commit. (A horizon such as `xid < pg_snapshot_xmin(pg_current_snapshot())` is what a reader
  that keeps its rows needs, to move an id mark safely; this reader needs none, and would pay
  for one by stalling every event behind the oldest writing transaction of the whole cluster.)
- Per job, the log's order is the writers' order. Two transactions that change one job are
  serialised by its row lock: the second one's UPDATE/DELETE (or a re-INSERT of the id, through
  the primary key) waits until the first has committed, and only then does its AFTER ROW
  trigger take a change id. So for one job, change ids increase in commit order, and a
  job's later change is only visible (committed) once its earlier ones are: every pass that
  sees a job's change also sees the earlier ones still in the table, and a page (the lowest ids
  that are visible) holds them. Ordering a page by id therefore keeps every job's transitions
  in the order they were written, within a transaction too (the trigger runs per row in the
  order of the writer's statements). Across jobs the log follows change ids, which need not be
  commit order; nothing relies on it. The sequence must keep CACHE 1 (0002_job_changes.py).
- Exactly once across a crash: events, the change rows' deletion and the watermark move are one
  transaction; the leader is alone (advisory lock), and the DELETE's row count is checked.

Dedupe keys. A change is logged under the key polling gives the same state
(`state_key`: job, updated_at, status), unless that key is already taken by an earlier
change (a repeat with the same updated_at and status, e.g. two updates in one transaction),
which then gets `change:{id}`. So when capture switches mode (capture.py `_check_mode`),
neither side logs a state twice: after the trigger is installed, the last sampling pass has
logged some jobs' newest states, and their changes up to that state are skipped (they were
sampled, as polling does); after it is dropped, polling's re-read of its overlap window finds
the states already logged.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg2.extras

from admin_service import metrics
from admin_service.actions.outcome import pickup_events
from admin_service.clock import utc
from admin_service.config import Settings
from admin_service.db.archive_options import CHANGE_TRIGGERS, asleep_lock_key
from admin_service.db.dbapi import Connection, Cursor
from admin_service.db.tables import JOBS_TABLE, USERS_TABLE
from admin_service.jobs.days import ClosedDays, touched_days
from admin_service.jobs.serialize import USER_EMAIL, USER_ID, USER_USERNAME, job_json
from admin_service.jobs.stats import StatusCounts, count_key
from admin_service.jobs.status import TERMINAL, Transition, normalize
from admin_service.live import alerts
from admin_service.live.connection import transaction, wait_for_notify
from admin_service.live.episodes import Episodes
from admin_service.live.log import EventLog, NewEvent
from admin_service.names import CAPTURE_EXACT, CAPTURE_POLL, JOB_UPDATE

log = logging.getLogger("admin_service.capture")

EXACT, POLL = CAPTURE_EXACT, CAPTURE_POLL  # the leader's modes (names.py: what /health/ready reports)
BATCH = 5000
# While a writer that did not NOTIFY is still in its transaction, how often the leader looks again.
AWAKE_RECHECK_S = 0.02
DELETED = "deleted"  # the job-update kind of a deleted job (exact mode only)

INSTALLED = """
    SELECT count(*) FROM pg_trigger t
    JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE t.tgrelid = to_regclass(%s) AND t.tgname = ANY(%s) AND n.nspname = %s AND t.tgenabled <> 'D'
"""


def state_key(job_id: Any, updated_at: datetime, status: str) -> str:
    """The dedupe key of one state of a job (what polling logs a sampled row under)."""
    return f"job:{job_id}:{utc(updated_at).isoformat()}:{status}"


def change_kind(op: str, status: str, previous: str | None) -> str:
    if op == "D":
        return DELETED
    if status in TERMINAL and previous != status:
        return status
    return "created" if op == "I" else "updated"


def change_transition(op: str, old_status: str | None, status: str | None) -> Transition:
    """How one change row moves the counts per status (a delete row's job is the old one)."""
    if op == "I":
        return None, count_key(status)
    if op == "D":
        return count_key(status if status is not None else old_status), None
    return count_key(old_status), count_key(status)


def installed(cur: Cursor, schema: str) -> bool:
    """Whether both change-capture row triggers (calling this schema's function) are enabled."""
    cur.execute(INSTALLED, (JOBS_TABLE, list(CHANGE_TRIGGERS), schema))
    return int(cur.fetchone()[0]) == len(CHANGE_TRIGGERS)


def choose_mode(cur: Cursor, settings: Settings) -> tuple[str, bool]:
    """(the mode capture runs in, whether the change-capture trigger is installed)."""
    present = installed(cur, settings.admin_schema)
    if settings.capture_mode == "auto":
        return (EXACT if present else POLL), present
    return settings.capture_mode, present


class ChangeConsumer:
    def __init__(self, settings: Settings, event_log: EventLog, episodes: Episodes) -> None:
        self.settings = settings
        self.log = event_log
        self.episodes = episodes
        schema = event_log.schema
        self._changes = f'"{schema}".job_changes'
        self._asleep = asleep_lock_key(schema)
        self.counts = StatusCounts(schema)
        self.closed_days = ClosedDays(schema, version="")  # marks any version's days
        # The row as it was written (typed again by jsonb_populate_record), with its user now.
        self._page = f"""
            SELECT c.id AS change_id, c.op AS change_op, c.old_status AS change_old_status, j.*,
                   u.id AS {USER_ID}, u.email AS {USER_EMAIL}, u.username AS {USER_USERNAME}, clock_timestamp() AS db_now
            FROM {self._changes} c
            CROSS JOIN LATERAL jsonb_populate_record(NULL::{JOBS_TABLE}, c.job) j
            LEFT JOIN {USERS_TABLE} u ON u.id = j.user_id
            ORDER BY c.id
            LIMIT %s
        """

    def wait(self, conn: Connection, timeout: float, heard: set[str] | None = None) -> None:
        """Wait until changes may be there (or `timeout`), without making every writer NOTIFY.

        A transaction that NOTIFYs takes a database-wide lock at commit (PostgreSQL keeps the
        notification queue in commit order), so NOTIFYing on every change would serialise the
        writers' commits. Instead the leader sleeps holding an advisory lock exclusively, and the
        wake trigger NOTIFYs only when it cannot take that lock shared. A writer that did take it
        (the leader was awake) holds it until its transaction ends, so the leader can only go to
        sleep once every such writer has committed (or rolled back), and then it looks once more
        before sleeping: no change waits for the fallback timer. The NOTIFYs' payloads are added
        to `heard` when given."""
        deadline = time.monotonic() + timeout
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self._asleep,))
                asleep = bool(cur.fetchone()[0])
            if asleep:
                try:
                    if not self._any(conn):
                        wait_for_notify(conn, max(0.0, deadline - time.monotonic()), heard)
                finally:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (self._asleep,))
                return
            # A writer that saw us awake has not finished: look again shortly.
            remaining = deadline - time.monotonic()
            if wait_for_notify(conn, min(AWAKE_RECHECK_S, max(0.0, remaining)), heard) or remaining <= 0 or self._any(conn):
                return

    def _any(self, conn: Connection) -> bool:
        with conn.cursor() as cur:
            # One index probe, no transaction, no row lock (idle passes stay this cheap).
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {self._changes})")
            return bool(cur.fetchone()[0])

    def consume(self, conn: Connection) -> int:
        """Log every change in the table, oldest first; the number of changes consumed."""
        if not self._any(conn):
            return 0
        total = 0
        while True:
            count = self._consume_page(conn)
            total += count
            if count < BATCH:
                return total

    def _consume_page(self, conn: Connection) -> int:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur, transaction(cur):
            # The watermark's row lock also keeps a polling pass (a leader switching modes) out.
            self.log.lock_watermark(cur, timedelta(seconds=self.settings.capture_overlap_s))
            cur.execute(self._page, (BATCH,))
            rows: list[dict[str, Any]] = cur.fetchall()
            if not rows:
                return 0
            events = self._events_for(cur, rows)
            events += pickup_events(cur, self.log.schema, events)
            ids = self.log.append_and_notify(cur, events)
            # Every consumed change moves the counts, logged or merged into a sampled state alike.
            transitions = [change_transition(r["change_op"], r["change_old_status"], r["status"]) for r in rows]
            self.counts.apply(cur, transitions)
            # The closed days whose figures these changes may move are rolled up again.
            self.closed_days.mark(cur, touched_days(list(zip(transitions, (r["created_at"] for r in rows), strict=True))))
            with conn.cursor() as plain:
                plain.execute(f"DELETE FROM {self._changes} WHERE id = ANY(%s)", ([r["change_id"] for r in rows],))
                if plain.rowcount != len(rows):  # never: the leader is alone; if so, log nothing
                    raise RuntimeError(f"{len(rows) - plain.rowcount} change rows were consumed by another process")
            stamps = [utc(r["updated_at"]) for r in rows if r["updated_at"] is not None]
            if stamps:
                # Polling, if the trigger is dropped, starts from here (never past the database clock).
                self.log.advance_watermark(cur, min(max(stamps), utc(rows[0]["db_now"])))
        metrics.capture_logged(rows, events, len(ids))
        return len(rows)

    def pending(self, cur: Cursor) -> list[tuple[Transition, int]]:
        """The transitions of the change rows not consumed yet, with how many of each (what the
        counts will be moved by when they are)."""
        with cur.connection.cursor() as plain:
            plain.execute(f"SELECT op, old_status, new_status, count(*) FROM {self._changes} GROUP BY 1, 2, 3")
            return [(change_transition(op, old, new), int(n)) for op, old, new, n in plain.fetchall()]

    def _events_for(self, cur: Cursor, rows: list[dict[str, Any]]) -> list[NewEvent]:
        changes = []
        for row in rows:
            status = normalize(row["status"]) or "queued"
            previous = normalize(row["change_old_status"]) if row["change_op"] == "U" else None
            kind = change_kind(row["change_op"], status, previous)
            key = None if row["updated_at"] is None else state_key(row["id"], row["updated_at"], status)
            changes.append((row, status, kind, key))
        # Which of these states are logged already, and whether by a change (True) or by polling.
        logged = self.log.logged_keys(cur, [key for *_, key in changes if key is not None])
        # A state the last sampling pass logged (capture just switched to exact): that pass had
        # merged the job's changes up to it, so they are not logged again, nor out of order.
        sampled_up_to = {
            str(row["id"]): n for n, (row, *_, key) in enumerate(changes) if key is not None and logged.get(key) is False
        }
        used: set[str] = set()
        events: list[NewEvent] = []
        failed: list[dict[str, Any]] = []
        for n, (row, status, kind, key) in enumerate(changes):
            if n <= sampled_up_to.get(str(row["id"]), -1):
                continue
            if key is None or key in used or key in logged or kind == DELETED:
                key = f"change:{row['change_id']}"
            used.add(key)
            job_id = str(row["id"])
            snapshot = job_json(row)  # the job as REST returns it, as it was at this change
            payload = {"event": kind, "job": snapshot, "timestamp": snapshot["updated_at"]}
            events.append(NewEvent(JOB_UPDATE, kind, payload, key, job_id, status, change_id=int(row["change_id"])))
            if kind == "failed":
                failed.append({**row, "status": status})
        raised = alerts.job_alerts(failed, self.settings)
        # Their episodes (and notifications) in this same transaction, logged right after them.
        return [*events, *raised, *self.episodes.follow(cur, raised)]
