"""Figures of closed days kept per day in the service's schema (`closed_days`), so that a
range of days reads one row per day instead of every job created in it; only today, and any day
not rolled up, is read from the jobs table.

A day is a local day of STATS_TIMEZONE. Its row holds the jobs created in it by their status
now (the stats' daily series), and the failure triage keeps its groups per day beside it
(`failure_rollup`, triage/rollup.py, written by the same rebuild). The figures equal the jobs
table's for every day served from here:

- **Marked by capture.** The capture leader logs every change it sees in its own transaction;
  in that transaction `mark` bumps `dirty_seq` of the day the changed job was created on when
  the change may move the day's figures (its status moved or is not known before, or it is or
  was failed: a failed job's message may have changed). Exact capture sees every change;
  polling misses edits of a job that stays closed, deletes, inserts with an old created_at and
  a TRUNCATE, which the periodic rebuild (CLOSED_DAYS_RECONCILE_S) takes in.
- **Rebuilt by one loop** (the capture leader's process, `Maintainer`): a day whose
  `built_seq < dirty_seq` is aggregated again from the jobs table. The rebuild reads
  `dirty_seq` before it aggregates and records that value: a change marked after the read
  leaves the day dirty, and one marked before it is in the aggregate (capture marks only after
  the change committed, and each statement sees what committed before it).
- **Read only while clean**: a day is read from here only if `built_seq >= dirty_seq` in the
  reader's snapshot, else from the jobs table. So the figures are as exact as capture is
  current, which is what every live figure of the service is.
- **Read only while marked**: the loop holds a lease (`closed_days_lease`, LEASE, renewed
  before every rebuild) that readers require. A capture leader that does not mark (an older
  version, during a rolling upgrade) lets it lapse, and no day is read while it is lapsed; the
  next loop that takes it over marks every day dirty first, since changes went unmarked.

Rows are keyed by a version of what the rebuild writes and by time zone: another release or
another STATS_TIMEZONE never reads rows it did not build (counts are read whatever the
version: they do not depend on it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Column, Connection, Date, DateTime, Engine, MetaData, Table, Text, func, literal, select, text

from admin_service.db.dbapi import Cursor
from admin_service.db.tables import jobs
from admin_service.jobs.status import Transition, stored_values
from admin_service.triage.ranges import local_midnight

log = logging.getLogger("admin_service.days")

# The daily figures each day holds (the stats' daily series: jobs created, of them by status now).
COUNTED = ("completed", "failed", "cancelled")
# Days of another version or time zone that nobody rebuilt for this long are dropped.
RETIRED_AFTER = timedelta(days=2)
# How long the loop's lease on the days lasts (renewed before every rebuild): the longest time a
# capture leader that does not mark (an older version) may be trusted to have marked.
LEASE = timedelta(seconds=30)
# Days rebuilt per pass at most (a first fill of 92 days takes a few passes, between which the
# loop looks at its stop and leadership again).
PASS_DAYS = 16

# The version of the daily counts' definition (part of every version of the closed days).
COUNTS_VERSION = "1"

# What else a rebuild keeps for a day: called with (conn, tz, day, start, end) before the day's
# row is locked, it computes and returns the write to run once it is (so that capture's marks
# wait only for the writes, not for the aggregates).
Contributor = Callable[[Connection, ZoneInfo, date, datetime, datetime], Callable[[], None]]


def process_name() -> str:
    """This process, as the service's own tables name it (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def touched_days(changes: Sequence[tuple[Transition, datetime | None]]) -> list[datetime]:
    """Of captured changes (their transition of the counts per status, their job's created_at),
    the creation instants of those that may move a day's figures."""
    return [
        created
        for (before, after), created in changes
        if created is not None and (before is None or before != after or after == "failed")
    ]


def closed_days_table(schema: str) -> Table:
    return Table(
        "closed_days",
        MetaData(schema=schema),
        Column("version", Text, primary_key=True),
        Column("tz", Text, primary_key=True),
        Column("day", Date, primary_key=True),
        Column("day_start", DateTime(timezone=True)),
        Column("day_end", DateTime(timezone=True)),
        Column("dirty_seq", BigInteger),
        Column("built_seq", BigInteger),
        Column("built_at", DateTime(timezone=True)),
        Column("total", BigInteger),
        *(Column(name, BigInteger) for name in COUNTED),
    )


class ClosedDays:
    """The one owner of SQL on closed_days. `version` names what the rebuild writes (the counts'
    and the contributors' versions): rows of another version are rebuilt, never read as this
    version's (but for the counts, which are the same in every version)."""

    def __init__(self, schema: str, version: str) -> None:
        self.table = closed_days_table(schema)
        self.version = version
        self._days = f'"{schema}".closed_days'
        self._seq = f'"{schema}".closed_days_seq'
        self._lease = f'"{schema}".closed_days_lease'
        # Readers' condition: the days are being marked (the lease is held).
        self._marked = text(f"EXISTS (SELECT 1 FROM {self._lease} WHERE id = 1 AND until > now())")

    # -- capture's side: in the leader's transaction -----------------------------------
    def mark(self, cur: Cursor, created: list[datetime]) -> None:
        """The days (of every version and time zone) holding these creation instants are dirty:
        they are not read again until rebuilt."""
        if not created:
            return
        with cur.connection.cursor() as plain:
            plain.execute(
                f"UPDATE {self._days} d SET dirty_seq = nextval('{self._seq}') "
                "FROM (SELECT DISTINCT unnest(%s::timestamptz[]) AS c) x WHERE d.day_start <= x.c AND x.c < d.day_end",
                (sorted(set(created)),),
            )

    # -- the readers' side ----------------------------------------------------------------
    def clean_days(self, conn: Connection, tz: ZoneInfo, first: date, last: date) -> dict[date, datetime]:
        """This version's days first..last that are clean in the caller's snapshot, with when
        each was built."""
        d = self.table.c
        stmt = select(d.day, d.built_at).where(
            d.version == self.version, d.tz == tz.key, d.day >= first, d.day <= last, d.built_seq >= d.dirty_seq, self._marked
        )
        return {row.day: row.built_at for row in conn.execute(stmt)}

    def counts(self, conn: Connection, tz: ZoneInfo, first: date, last: date) -> dict[date, dict[str, int]]:
        """The daily figures of the clean days first..last (of any version: counts are counts)."""
        d = self.table.c
        stmt = (
            select(d.day, d.total, *(d[name] for name in COUNTED))
            .where(d.tz == tz.key, d.day >= first, d.day <= last, d.built_seq >= d.dirty_seq, self._marked)
            .distinct(d.day)
            .order_by(d.day, d.built_at.desc())
        )
        return {row.day: {"total": row.total, **{name: row._mapping[name] for name in COUNTED}} for row in conn.execute(stmt)}

    # -- the maintainer's side ------------------------------------------------------------
    def renew(self, conn: Connection, holder: str) -> bool:
        """Hold the lease LEASE longer; True when it had lapsed, and every day (of every version
        and time zone) was marked dirty, since nobody marked them meanwhile."""
        lapsed = conn.execute(
            text(
                f"UPDATE {self._lease} l SET until = now() + CAST(:lease AS interval), holder = :holder "
                f"FROM (SELECT until FROM {self._lease} WHERE id = 1 FOR UPDATE) AS old "
                "WHERE l.id = 1 RETURNING old.until <= now()"
            ),
            {"lease": f"{LEASE.total_seconds()} seconds", "holder": holder},
        ).scalar()
        if lapsed:
            conn.execute(text(f"UPDATE {self._days} SET dirty_seq = nextval('{self._seq}')"))
        return bool(lapsed)

    def plan(self, conn: Connection, tz: ZoneInfo, today: date, keep_days: int) -> None:
        """Rows for the closed days to keep (new ones dirty), none for older days, and none of
        other versions or time zones that nobody rebuilt for RETIRED_AFTER."""
        wanted = [today - timedelta(days=n) for n in range(keep_days, 0, -1)]
        d = self.table.c
        conn.execute(
            text(
                f"INSERT INTO {self._days} (version, tz, day, day_start, day_end, dirty_seq) "
                f"SELECT :version, :tz, day, s, e, nextval('{self._seq}') "
                "FROM unnest(CAST(:days AS date[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[])) AS w(day, s, e) "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "version": self.version,
                "tz": tz.key,
                "days": wanted,
                "starts": [local_midnight(day, tz) for day in wanted],
                "ends": [local_midnight(day + timedelta(days=1), tz) for day in wanted],
            },
        )
        ours = (d.version == self.version) & (d.tz == tz.key)
        oldest = today - timedelta(days=keep_days)
        conn.execute(self.table.delete().where(ours, (d.day < oldest) | (d.day >= today)))
        conn.execute(
            self.table.delete().where(~ours, func.coalesce(d.built_at, literal(datetime.min)) < func.now() - RETIRED_AFTER)
        )

    def due(self, conn: Connection, tz: ZoneInfo, reconcile_s: float, limit: int) -> list[date]:
        """Dirty days newest first, then days not rebuilt for reconcile_s, oldest built first."""
        d = self.table.c
        dirty = d.built_seq.is_(None) | (d.built_seq < d.dirty_seq)
        stale = d.built_at < func.now() - timedelta(seconds=reconcile_s)
        stmt = (
            select(d.day)
            .where(d.version == self.version, d.tz == tz.key, dirty | stale)
            .order_by(dirty.desc(), d.built_at.asc().nulls_first(), d.day.desc())
            .limit(limit)
        )
        return list(conn.execute(stmt).scalars())

    def rebuild(self, conn: Connection, tz: ZoneInfo, day: date, contributors: Sequence[Contributor]) -> bool:
        """Aggregate `day` again (in the caller's transaction, committed by it); False when the
        day is no longer kept."""
        d = self.table.c
        key = [d.version == self.version, d.tz == tz.key, d.day == day]
        read = conn.execute(select(d.dirty_seq).where(*key)).scalar()
        if read is None:
            return False
        start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
        counted = (
            select(
                func.count().label("total"),
                *(func.count().filter(jobs.c.status.in_(stored_values([name]))).label(name) for name in COUNTED),
            )
            .where(jobs.c.created_at >= start, jobs.c.created_at < end)
            .subquery()
        )
        figures = dict(conn.execute(select(counted)).mappings().one())
        writes = [contribute(conn, tz, day, start, end) for contribute in contributors]
        # Capture's marks of this day wait from here to the commit, and so does another rebuild.
        if conn.execute(select(d.day).where(*key).with_for_update()).scalar() is None:
            return False
        for write in writes:
            write()
        conn.execute(
            self.table.update()
            .where(*key)
            .values(built_seq=func.greatest(func.coalesce(d.built_seq, 0), read), built_at=func.now(), **figures)
        )
        return True


class Maintainer:
    """The loop that keeps the closed days: run by the capture leader's process (whose
    transactions mark them), one day per transaction."""

    def __init__(
        self,
        days: ClosedDays,
        contributors: Sequence[Contributor],
        engine: Engine,
        tz: ZoneInfo,
        keep_days: int,
        reconcile_s: float,
        statement_timeout_ms: int,
    ) -> None:
        self.days = days
        self.contributors = contributors
        self.engine = engine
        self.tz = tz
        self.keep_days = keep_days
        self.reconcile_s = reconcile_s
        self.statement_timeout_ms = statement_timeout_ms
        self.holder = process_name()

    def run_pass(self, now: datetime) -> int:
        """Plan the days and rebuild up to PASS_DAYS of the due ones; how many were due."""
        today = now.astimezone(self.tz).date()
        with self.engine.begin() as conn:
            if self.days.renew(conn, self.holder):
                log.info("closed days: lease taken over after it lapsed, every day marked to be rebuilt")
            self.days.plan(conn, self.tz, today, self.keep_days)
            due = self.days.due(conn, self.tz, self.reconcile_s, PASS_DAYS)
        for day in due:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {self.statement_timeout_ms}")
                # Renewed in the rebuild's transaction: a lapse found here marks this day too.
                self.days.renew(conn, self.holder)
                self.days.rebuild(conn, self.tz, day, self.contributors)
        return len(due)

    def run(self, stop: threading.Event, is_leader: Callable[[], bool], tick_s: float, now: Callable[[], datetime]) -> None:
        while not stop.is_set():
            if not is_leader():
                stop.wait(tick_s)
                continue
            try:
                rebuilt = self.run_pass(now())
            except Exception as exc:  # a database outage: the loop must outlive it
                log.warning("closed days pass failed, retrying: %s", type(exc).__name__)
                rebuilt = 0
            if rebuilt < PASS_DAYS:
                stop.wait(tick_s)
