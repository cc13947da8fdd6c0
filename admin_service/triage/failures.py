"""GET /admin/jobs/failures: failed jobs of a range of days grouped by error signature, in
one statement: the closed days' groups from the rollup (triage/rollup.py), the other days'
failed jobs from the jobs table (the status index, or (status, created_at, id) with `db
install-indexes`), each distinct message normalised once; merged, counted per day and paged
in PostgreSQL; only the page's groups come back."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import ARRAY, BigInteger, Connection, DateTime, and_, bindparam, func, or_, select, true, union_all
from sqlalchemy.dialects.postgresql import aggregate_order_by

from admin_service.db.tables import jobs
from admin_service.jobs.queries import assessment_name_matches
from admin_service.jobs.schemas import Moment
from admin_service.triage.ranges import Buckets, cut, resolve_range
from admin_service.triage.rollup import SAMPLE_JOBS, FailureRollup, partials, tagged_failures

MAX_DAYS = 90
# The statement timeout of the grouping (normalising tens of thousands of distinct messages
# over 90 days takes seconds at 1,000,000 jobs on a loaded 2-core server).
GROUPING_TIMEOUT_MS = 30_000
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


def _live_ranges(days: Buckets, clean: set[date]) -> list[tuple[datetime, datetime]]:
    """The instants of the days not served from the rollup, consecutive days merged."""
    ranges: list[tuple[datetime, datetime]] = []
    first = date.fromisoformat(days.label(1))
    for k in range(1, len(days) + 1):
        if first + timedelta(days=k - 1) in clean:
            continue
        if ranges and ranges[-1][1] == days.bounds[k - 1]:
            ranges[-1] = (ranges[-1][0], days.bounds[k])
        else:
            ranges.append((days.bounds[k - 1], days.bounds[k]))
    return ranges


def failure_groups(
    conn: Connection,
    rollup: FailureRollup | None,
    days: Buckets,
    assessment_name: str | None,
    page: int,
    limit: int,
    statement_timeout_ms: int = 0,
) -> dict[str, Any]:
    """The groups of one page, in the caller's transaction (REPEATABLE READ: the days' state and
    the rows it vouches for in one snapshot). Closed days come from the rollup where it is
    clean, the others (today, days being rebuilt, days older than it keeps) from the jobs
    table; both as partials per signature, assessment and day, merged here."""
    first, last = date.fromisoformat(days.label(1)), date.fromisoformat(days.label(len(days)))
    # A long range read from the jobs table (no rollup yet) may take longer than a request's
    # statement timeout on a busy server: it is given more.
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(GROUPING_TIMEOUT_MS, statement_timeout_ms)}")
    clean = rollup.days.clean_days(conn, days.tz, first, last) if rollup is not None else {}
    sources: list[Any] = []
    if clean and rollup is not None:
        sources.append(rollup.rolled(days.tz, sorted(clean), first, assessment_name))
    live = _live_ranges(days, set(clean))
    if live:
        conditions = [or_(*(and_(jobs.c.created_at >= a, jobs.c.created_at < b) for a, b in live))]
        if assessment_name:
            conditions.append(assessment_name_matches(assessment_name))
        tagged = tagged_failures(conditions)
        bounds = bindparam("bounds", list(days.bounds), type_=ARRAY(DateTime(timezone=True)))
        sources.append(partials(tagged, func.width_bucket(tagged.c.created_at, bounds)))
    combined: Any = union_all(*sources) if len(sources) > 1 else sources[0]
    parts = combined.cte("parts")
    per_day = (
        select(parts.c.signature, parts.c.k, func.sum(parts.c.n).label("n"))
        .group_by(parts.c.signature, parts.c.k)
        .subquery("per_day")
    )
    day_counts = (
        select(per_day.c.signature, func.jsonb_object_agg(per_day.c.k, per_day.c.n).label("per_day"))
        .group_by(per_day.c.signature)
        .subquery("day_counts")
    )
    groups = (
        select(
            parts.c.signature,
            func.sum(parts.c.n).cast(BigInteger).label("n"),
            func.min(parts.c.first_seen).label("first_seen"),
            func.max(parts.c.last_seen).label("last_seen"),
            func.array_agg(aggregate_order_by(parts.c.example, parts.c.last_seen.desc(), parts.c.sample_ids[1].desc()))[1].label(
                "example"
            ),
            func.array_agg(aggregate_order_by(parts.c.assessment_name.distinct(), parts.c.assessment_name)).label("assessments"),
        )
        .group_by(parts.c.signature)
        .subquery("groups")
    )
    sample = func.unnest(parts.c.sample_ids, parts.c.sample_created).table_valued("id", "created").render_derived(name="sample")
    samples = (
        select(
            parts.c.signature,
            func.array_agg(aggregate_order_by(sample.c.id, sample.c.created.desc(), sample.c.id.desc()))[1:SAMPLE_JOBS].label(
                "samples"
            ),
        )
        .select_from(parts.join(sample, true()))
        .group_by(parts.c.signature)
        .subquery("samples")
    )
    page_rows = (
        select(groups, day_counts.c.per_day, samples.c.samples)
        .join(day_counts, day_counts.c.signature == groups.c.signature)
        .join(samples, samples.c.signature == groups.c.signature)
        .order_by(groups.c.n.desc(), groups.c.signature)
        .limit(limit)
        .offset((page - 1) * limit)
        .subquery("page")
    )
    totals = select(
        func.count(func.distinct(parts.c.signature)).label("group_count"),
        func.coalesce(func.sum(parts.c.n), 0).cast(BigInteger).label("failure_count"),
    ).subquery("totals")
    stmt = (
        select(totals, page_rows)
        .select_from(totals.outerjoin(page_rows, true()))
        .order_by(page_rows.c.n.desc(), page_rows.c.signature)
    )
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
        "rollup": {
            "days": len(clean),
            "liveDays": len(days) - len(clean),
            "builtAt": min(clean.values()) if clean else None,
        },
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
