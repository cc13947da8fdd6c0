"""GET /admin/jobs/failures: failed jobs of a range of days grouped by error signature, in
one statement: PostgreSQL filters the failed jobs (the status index, or (status, created_at,
id) with `db install-indexes`), normalises each distinct message once, groups, counts per day
and pages; only the page's groups come back."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import ARRAY, Connection, DateTime, bindparam, func, literal, select, true
from sqlalchemy.dialects.postgresql import aggregate_order_by

from admin_service.db.tables import jobs
from admin_service.jobs.queries import JobFilters
from admin_service.jobs.schemas import Moment
from admin_service.triage.ranges import Buckets, cut, resolve_range
from admin_service.triage.signature import signature_sql

MAX_DAYS = 90
# The statement timeout of the grouping (normalising tens of thousands of distinct messages
# over 90 days takes seconds at 1,000,000 jobs on a loaded 2-core server).
GROUPING_TIMEOUT_MS = 30_000
SAMPLE_JOBS = 5
LIST_PATH = "/admin/jobs"


def day_range(args: dict[str, Any], tz: ZoneInfo, now: datetime) -> Buckets:
    """The whole local days from..to (default: the last 7 days, today included)."""
    date_from: Moment | None = args.get("date_from")
    if date_from is None and args.get("date_to") is None:
        date_from = Moment(now.astimezone(tz).date() - timedelta(days=6))
    start, end = resolve_range(
        date_from, args.get("date_to"), tz, now, timedelta(days=6), timedelta(days=MAX_DAYS), f"for failures ({MAX_DAYS} days)"
    )
    return cut(start, end, "day", tz)


def list_filter(days: Buckets, signature: str, assessment_name: str | None) -> dict[str, str]:
    """The list endpoint's query that lists exactly a group's jobs: whole local days, as here."""
    query = {
        "status": "failed",
        "signature": signature,
        "date_from": days.label(1),
        "date_to": days.label(len(days)),
    }
    if assessment_name:
        query["assessment_name"] = assessment_name
    return query


def failure_groups(
    conn: Connection, days: Buckets, assessment_name: str | None, page: int, limit: int, statement_timeout_ms: int = 0
) -> dict[str, Any]:
    first, last = date.fromisoformat(days.label(1)), date.fromisoformat(days.label(len(days)))
    filters = JobFilters(statuses=("failed",), assessment_name=assessment_name, date_from=Moment(first), date_to=Moment(last))
    failed = (
        select(jobs.c.id, jobs.c.created_at, jobs.c.assessment_name, jobs.c.error_message)
        .where(*filters.conditions(days.tz))
        .cte("failed_jobs")
    )
    # Each distinct message is normalised once (a hash join brings the signature back to its
    # rows): messages repeat far more often than their variable parts differ.
    message_key = func.coalesce(failed.c.error_message, literal(""))
    messages = select(message_key.label("message")).distinct().cte("messages")
    signatures = select(messages.c.message, signature_sql(messages.c.message).label("signature")).cte("signatures")
    tagged = select(failed, signatures.c.signature).join(signatures, signatures.c.message == message_key).cte("tagged")
    bounds = bindparam("bounds", list(days.bounds), type_=ARRAY(DateTime(timezone=True)))
    per_day = (
        select(
            tagged.c.signature,
            func.width_bucket(tagged.c.created_at, bounds).label("day"),
            func.count().label("n"),
        )
        .group_by(tagged.c.signature, "day")
        .subquery("per_day")
    )
    day_counts = (
        select(per_day.c.signature, func.jsonb_object_agg(per_day.c.day, per_day.c.n).label("per_day"))
        .group_by(per_day.c.signature)
        .subquery("day_counts")
    )
    newest_first = tagged.c.created_at.desc()
    groups = (
        select(
            tagged.c.signature,
            func.count().label("n"),
            func.min(tagged.c.created_at).label("first_seen"),
            func.max(tagged.c.created_at).label("last_seen"),
            func.array_agg(aggregate_order_by(tagged.c.error_message, newest_first))[1].label("example"),
            func.array_agg(aggregate_order_by(tagged.c.assessment_name.distinct(), tagged.c.assessment_name)).label(
                "assessments"
            ),
            func.array_agg(aggregate_order_by(tagged.c.id, newest_first))[1:SAMPLE_JOBS].label("samples"),
        )
        .group_by(tagged.c.signature)
        .subquery("groups")
    )
    page_rows = (
        select(groups, day_counts.c.per_day)
        .join(day_counts, day_counts.c.signature == groups.c.signature)
        .order_by(groups.c.n.desc(), groups.c.signature)
        .limit(limit)
        .offset((page - 1) * limit)
        .subquery("page")
    )
    totals = select(
        func.count(func.distinct(tagged.c.signature)).label("group_count"), func.count().label("failure_count")
    ).subquery("totals")
    stmt = (
        select(totals, page_rows)
        .select_from(totals.outerjoin(page_rows, true()))
        .order_by(page_rows.c.n.desc(), page_rows.c.signature)
    )
    # Shared for TRIAGE_SHARE_MS and recomputed ahead of time (triage/cache.py), a long range
    # may take longer than a request's statement timeout on a busy server: it is given more.
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(GROUPING_TIMEOUT_MS, statement_timeout_ms)}")
    rows = conn.execute(stmt).mappings().all()
    group_count = int(rows[0]["group_count"]) if rows else 0
    failure_count = int(rows[0]["failure_count"]) if rows else 0
    result_groups = []
    for row in rows:
        if row["signature"] is None:
            continue  # the outer join's row of an empty page
        counts = {int(k): int(v) for k, v in (row["per_day"] or {}).items()}
        query = list_filter(days, row["signature"], assessment_name)
        result_groups.append(
            {
                "signature": row["signature"],
                "example": row["example"],
                "count": int(row["n"]),
                "share": round(row["n"] / failure_count, 4) if failure_count else 0.0,
                "firstSeen": row["first_seen"],
                "lastSeen": row["last_seen"],
                "perDay": [{"date": days.label(k), "count": counts.get(k, 0)} for k in range(1, len(days) + 1)],
                "assessments": [name for name in row["assessments"] if name is not None],
                "sampleJobIds": [str(job_id) for job_id in row["samples"]],
                "filter": query,
                "listUrl": f"{LIST_PATH}?{urlencode(query)}",
            }
        )
    total_pages = -(-group_count // limit)
    return {
        "range": {
            "from": days.start,
            "to": days.end,
            "firstDay": days.label(1),
            "lastDay": days.label(len(days)),
            "days": len(days),
            "timezone": days.tz.key,
        },
        "assessmentName": assessment_name,
        "totalFailures": failure_count,
        "groups": result_groups,
        "pagination": {
            "total": group_count,
            "page": page,
            "limit": limit,
            "totalPages": total_pages,
            "hasNext": page < total_pages,
            "hasPrev": page > 1,
        },
    }
