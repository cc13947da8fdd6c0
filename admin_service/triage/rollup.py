"""Failure triage rolled up per closed day (beside the day's counts in closed_days, written by
the same rebuild: jobs/days.py says how a day is kept exact), so that a range of 90 days reads a
few thousand rolled-up rows and only today's failed jobs (and any day not rolled up) from the
jobs table.

Per local day, error signature and assessment name: the failed jobs' count, first and last
seen, the newest raw message and the newest job ids (`failure_rollup`). Read in one snapshot
with the days' state (REPEATABLE READ, failures.py): a day is read from here only if it is
clean in that snapshot, else from the jobs table, like today."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    bindparam,
    func,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import UUID, aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from admin_service.db.tables import jobs
from admin_service.jobs import status as job_status
from admin_service.jobs.days import COUNTS_VERSION, ClosedDays
from admin_service.jobs.queries import contains
from admin_service.triage.signature import NO_MESSAGE, RULES, SIGNATURE_MAX, signature_sql

# Rows built by other rules are never read: the version of the closed days (jobs/days.py) the
# failure groups are kept beside includes the rules', so a release with other rules rebuilds them.
RULES_VERSION = hashlib.sha256(repr((RULES, SIGNATURE_MAX, NO_MESSAGE)).encode()).hexdigest()[:16]
ROLLUP_VERSION = f"{COUNTS_VERSION}.{RULES_VERSION}"
SAMPLE_JOBS = 5


def failure_rollup_table(schema: str) -> Table:
    return Table(
        "failure_rollup",
        MetaData(schema=schema),
        Column("version", Text),
        Column("tz", Text),
        Column("day", Date),
        Column("signature", Text),
        Column("assessment_name", Text),
        Column("n", BigInteger),
        Column("first_seen", DateTime(timezone=True)),
        Column("last_seen", DateTime(timezone=True)),
        Column("example", Text),
        Column("sample_ids", ARRAY(UUID(as_uuid=True))),
        Column("sample_created", ARRAY(DateTime(timezone=True))),
    )


def tagged_failures(conditions: list[ColumnElement[bool]]) -> Any:
    """The failed jobs meeting `conditions` with their signature (CTE `tagged`). Each distinct
    message is normalised once (a hash join brings the signature back to its rows): messages
    repeat far more often than their variable parts differ."""
    failed = (
        select(jobs.c.id, jobs.c.created_at, jobs.c.assessment_name, jobs.c.error_message)
        .where(jobs.c.status.in_(job_status.stored_values(["failed"])), *conditions)
        .cte("failed_jobs")
    )
    message_key = func.coalesce(failed.c.error_message, literal(""))
    messages = select(message_key.label("message")).distinct().cte("messages")
    signatures = select(messages.c.message, signature_sql(messages.c.message).label("signature")).cte("signatures")
    return select(failed, signatures.c.signature).join(signatures, signatures.c.message == message_key).cte("tagged")


def partials(tagged: Any, day: ColumnElement[Any]) -> Select[Any]:
    """Per signature, assessment name and `day` (an expression of the row): what the rollup
    keeps. Newest first by (created_at, id), so that ties order the same way everywhere."""
    newest_first = (tagged.c.created_at.desc(), tagged.c.id.desc())
    return select(
        tagged.c.signature,
        tagged.c.assessment_name,
        day.label("k"),
        func.count().label("n"),
        func.min(tagged.c.created_at).label("first_seen"),
        func.max(tagged.c.created_at).label("last_seen"),
        func.array_agg(aggregate_order_by(tagged.c.error_message, *newest_first))[1].label("example"),
        func.array_agg(aggregate_order_by(tagged.c.id, *newest_first))[1:SAMPLE_JOBS].label("sample_ids"),
        func.array_agg(aggregate_order_by(tagged.c.created_at, *newest_first))[1:SAMPLE_JOBS].label("sample_created"),
    ).group_by(tagged.c.signature, tagged.c.assessment_name, "k")


class FailureRollup:
    """The one owner of SQL on failure_rollup."""

    def __init__(self, schema: str) -> None:
        self.rows = failure_rollup_table(schema)
        # The days the groups are kept beside, and their state.
        self.days = ClosedDays(schema, ROLLUP_VERSION)

    # -- the readers' side ----------------------------------------------------------------
    def rolled(self, tz: ZoneInfo, days: list[date], first: date, assessment_name: str | None) -> Select[Any]:
        """The rolled-up partials of `days`, shaped as `partials`, k counting from `first` = 1."""
        r = self.rows.c
        k = type_coerce(r.day - bindparam("first_day", first, type_=Date), Integer) + 1
        conds = [r.version == ROLLUP_VERSION, r.tz == tz.key, r.day.in_(days)]
        if assessment_name:
            conds.append(r.assessment_name.ilike(contains(assessment_name), escape="\\"))
        return select(
            r.signature,
            r.assessment_name,
            k.label("k"),
            r.n,
            r.first_seen,
            r.last_seen,
            r.example,
            r.sample_ids,
            r.sample_created,
        ).where(*conds)

    # -- the rebuild's side (a jobs/days.py contributor) ---------------------------------
    def rebuild_day(self, conn: Connection, tz: ZoneInfo, day: date, start: datetime, end: datetime) -> Callable[[], None]:
        """The day's groups (a ClosedDays contributor): aggregated now, written once the day's
        row is locked, in the rebuild's transaction."""
        tagged = tagged_failures([jobs.c.created_at >= start, jobs.c.created_at < end])
        groups = [dict(row) for row in conn.execute(partials(tagged, literal(1))).mappings()]

        def write() -> None:
            r = self.rows.c
            conn.execute(self.rows.delete().where(r.version == ROLLUP_VERSION, r.tz == tz.key, r.day == day))
            if groups:
                key = {"version": ROLLUP_VERSION, "tz": tz.key, "day": day}
                conn.execute(self.rows.insert(), [{**key, **{k: v for k, v in g.items() if k != "k"}} for g in groups])

        return write
