"""Polling capture's reads of archive.analysis_jobs, each served by an index the owner already
has (no opt-in index, no sequential scan of the table at any size):

- new jobs by `created_at` (its index), from the watermark minus the overlap window;
- the open jobs (queued/processing: few, and found by the status index): those changed inside
  the window, and a fingerprint of which jobs are open;
- the jobs the leader last saw open that are open no longer (completed, failed, cancelled): by
  primary key, when the fingerprint says the open set changed.

Finding changed rows by `updated_at` instead, with no index on it, read the whole table every
pass (13.4 CPU-seconds a minute of PostgreSQL at 1,000,000 jobs, idle).

This is state sampling, as polling always was: a pass sees each job as it is now, so several
changes of one job between two passes are one event, and a change of a job that was closed at
the last pass and is still closed (a closed job edited) is not seen at all. A job reopened by
the owner is open again, so it is seen. The exact capture mode records every change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from admin_service.db.dbapi import Cursor
from admin_service.db.tables import JOBS_TABLE, USERS_TABLE
from admin_service.jobs.serialize import USER_EMAIL, USER_ID, USER_USERNAME
from admin_service.jobs.status import STATUSES, TERMINAL, stored_values

OPEN_STATUSES = [s for s in STATUSES if s not in TERMINAL]
OPEN_STORED = stored_values(OPEN_STATUSES)

# The job with its user under the serialiser's labels (job_json reads them), and the database
# clock of the read (capture lag, the watermark's cap).
_JOB_WITH_USER = f"""
    SELECT j.*, u.id AS {USER_ID}, u.email AS {USER_EMAIL}, u.username AS {USER_USERNAME}, clock_timestamp() AS db_now
    FROM {JOBS_TABLE} j
    LEFT JOIN {USERS_TABLE} u ON u.id = j.user_id
"""

# Paged on (created_at, id): a burst larger than a page shares one created_at.
NEW_JOBS = (
    _JOB_WITH_USER
    + """
    WHERE j.created_at >= %(since)s
      AND (%(after_at)s::timestamptz IS NULL OR (j.created_at, j.id) > (%(after_at)s, %(after_id)s::uuid))
    ORDER BY j.created_at, j.id
    LIMIT %(limit)s
"""
)

JOBS_BY_ID = _JOB_WITH_USER + " WHERE j.id = ANY(%(ids)s::uuid[]) ORDER BY j.updated_at, j.id"

# One pass over the open jobs (status index): how many, an order-free fingerprint of their ids
# (XOR of a 64-bit hash), and the ids of those changed inside the window.
OPEN_SUMMARY = f"""
    SELECT count(*), COALESCE(bit_xor(uuid_hash_extended(id, 0)), 0),
           COALESCE(array_agg(id::text) FILTER (WHERE updated_at >= %(since)s), '{{}}')
    FROM {JOBS_TABLE}
    WHERE status = ANY(%(open)s)
"""

OPEN_IDS = f"SELECT id::text FROM {JOBS_TABLE} WHERE status = ANY(%(open)s)"


def new_jobs(cur: Cursor, since: datetime, *, after: tuple[datetime, Any] | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` jobs created since `since` (after `after`, a (created_at, id) page cursor)."""
    after_at, after_id = after if after is not None else (None, None)
    cur.execute(NEW_JOBS, {"since": since, "after_at": after_at, "after_id": after_id, "limit": limit})
    return cur.fetchall()


def jobs_by_id(cur: Cursor, since: datetime, *, ids: list[str]) -> list[dict[str, Any]]:
    """These jobs as they are now, oldest change first (`since` is not needed: it is in `ids`)."""
    cur.execute(JOBS_BY_ID, {"ids": ids})
    return cur.fetchall()


@dataclass
class OpenSet:
    """What the next pass should believe once this one's events are logged."""

    ids: set[str]
    fingerprint: tuple[int, int]


@dataclass
class OpenJobs:
    """The open jobs as the capture leader last saw them (in memory; a new leader starts from
    the jobs the log last showed open, so a job that closed between two leaders is still seen)."""

    ids: set[str] = field(default_factory=set)
    fingerprint: tuple[int, int] | None = None

    def start(self, logged_open: Iterable[str]) -> None:
        self.ids = set(logged_open)
        self.fingerprint = None  # the first pass compares the whole open set

    def changes(self, cur: Cursor, since: datetime) -> tuple[list[str], OpenSet | None]:
        """(ids of jobs to read by primary key: open ones changed since `since`, and the ones that
        left the open set; the open set to remember once their events are logged, if it moved)."""
        cur.execute(OPEN_SUMMARY, {"since": since, "open": OPEN_STORED})
        count, xor, recent = cur.fetchone()
        wanted = list(recent)
        fingerprint = (int(count), int(xor))
        if fingerprint == self.fingerprint:
            return wanted, None
        cur.execute(OPEN_IDS, {"open": OPEN_STORED})
        current = {row[0] for row in cur.fetchall()}
        gone = self.ids - current
        wanted.extend(gone - set(wanted))
        return wanted, OpenSet(current, fingerprint)

    def commit(self, seen: OpenSet | None) -> None:
        if seen is not None:
            self.ids, self.fingerprint = seen.ids, seen.fingerprint


def _change(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    return row["id"], row["updated_at"], row["status"]


class Pass:
    """The rows of one polling pass, page by page (`rows` is handed each page's cursor): full
    pages of new jobs first; then the last page of them together with the open jobs changed
    since `since` and the jobs that left the open set, so that within a page events follow the
    order of the changes (updated_at), not of the reads."""

    def __init__(self, open_jobs: OpenJobs, limit: int) -> None:
        self.open_jobs = open_jobs
        self.limit = limit
        self.after: tuple[datetime, Any] | None = None
        self.done = False
        self.seen: OpenSet | None = None  # to commit to open_jobs once the pass is logged

    def rows(self, cur: Cursor, since: datetime) -> list[dict[str, Any]]:
        new = new_jobs(cur, since, after=self.after, limit=self.limit)
        if len(new) == self.limit:
            # Page on (created_at, id): restarting from `since` would re-read the same rows
            # forever once the overlap window holds more than a page of them.
            self.after = (new[-1]["created_at"], new[-1]["id"])
            return sorted(new, key=lambda r: (r["updated_at"], str(r["id"])))
        self.done = True
        with cur.connection.cursor() as plain:
            wanted, self.seen = self.open_jobs.changes(plain, since)
        read = {_change(r) for r in new}
        rows = new + [r for r in (jobs_by_id(cur, since, ids=wanted) if wanted else []) if _change(r) not in read]
        return sorted(rows, key=lambda r: (r["updated_at"], str(r["id"])))
