"""GET /admin/jobs/trends: per bucket of a range (hour, day or week in the stats time zone),
the jobs created in it by their status now, the failure rate, processing-time and queue-wait
percentiles, and how many jobs were queued at its end. Two statements, both one range scan of
the created_at index: the bucket figures, and the queue at each bucket end."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    DateTime,
    Engine,
    Float,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from admin_service.db.tables import jobs
from admin_service.jobs import status as job_status
from admin_service.jobs.queries import assessment_name_matches
from admin_service.jobs.stats import PROCESSING_SECONDS_SQL, QUEUE_WAIT_SECONDS_SQL, SORT_WORK_MEM, in_parallel
from admin_service.triage.ranges import Buckets

# The queue at a bucket's end counts the jobs created up to QUEUE_LOOKBACK before the range
# that had not left the queue by then, plus every job still queued now whatever its age. A job
# queued longer than this that has left the queue since is not seen (reading further back would
# read the whole table): the platform's stuck-job monitor fails a job queued for 15 minutes.
QUEUE_LOOKBACK = timedelta(hours=24)
FRACTIONS = [0.5, 0.95]
ONE_MICROSECOND = timedelta(microseconds=1)
COUNTED = ("completed", "failed", "cancelled")


def _bounds(buckets: Buckets) -> Any:
    return bindparam("bounds", list(buckets.bounds), type_=ARRAY(DateTime(timezone=True)))


def _filters(assessment_name: str | None) -> list[ColumnElement[bool]]:
    return [assessment_name_matches(assessment_name)] if assessment_name else []


def _bucket_figures(conn: Connection, buckets: Buckets, assessment_name: str | None, by_name: bool) -> list[Any]:
    sample = (
        select(
            jobs.c.created_at,
            jobs.c.assessment_name,
            job_status.shown(jobs.c.status).label("status"),
            literal_column(PROCESSING_SECONDS_SQL).label("pt"),
            literal_column(QUEUE_WAIT_SECONDS_SQL).label("qw"),
        )
        .where(jobs.c.created_at >= buckets.start, jobs.c.created_at < buckets.end, *_filters(assessment_name))
        .subquery("sample")
    )
    k = func.width_bucket(sample.c.created_at, _bounds(buckets))
    fractions = literal(FRACTIONS, ARRAY(Float))
    columns: list[Any] = [
        k.label("k"),
        func.count().label("created"),
        *[func.count().filter(sample.c.status == name).label(name) for name in COUNTED],
        func.percentile_cont(fractions).within_group(sample.c.pt).label("pt"),
        func.percentile_cont(fractions).within_group(sample.c.qw).label("qw"),
    ]
    stmt = select(*columns)
    if by_name:
        stmt = select(*columns, sample.c.assessment_name.label("name"), func.grouping(sample.c.assessment_name).label("is_total"))
        stmt = stmt.group_by(func.grouping_sets(tuple_(k), tuple_(k, sample.c.assessment_name)))
    else:
        stmt = stmt.group_by(k)
    # The rows are sorted by bucket for the percentiles: in memory (jobs/stats.py SORT_WORK_MEM).
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_WORK_MEM}'")
    return list(conn.execute(stmt).mappings())


def _queue_spans(conn: Connection, buckets: Buckets, assessment_name: str | None) -> list[Any]:
    """How many jobs were queued from the end of bucket `first` through the end of bucket
    `last`, per (first, last[, name]): few distinct pairs, so one hash aggregate over one scan.
    Job j is queued at end b_k when created_at <= b_k < left_at (left_at: processing_started_at,
    else when it ended; NULL while queued)."""
    queued = job_status.stored_values(["queued"])
    left_at = func.coalesce(
        jobs.c.processing_started_at,
        case((jobs.c.status.in_(queued), null()), else_=func.coalesce(jobs.c.completed_at, jobs.c.updated_at)),
    )
    since = buckets.start - QUEUE_LOOKBACK
    filters = _filters(assessment_name)
    recent = select(jobs.c.created_at, jobs.c.assessment_name, left_at.label("left_at")).where(
        jobs.c.created_at >= since, jobs.c.created_at < buckets.end, *filters
    )
    older = select(jobs.c.created_at, jobs.c.assessment_name, null().label("left_at")).where(
        jobs.c.status.in_(queued), jobs.c.created_at < since, *filters
    )
    spans = union_all(recent, older).subquery("spans")
    bounds, n = _bounds(buckets), len(buckets)
    # width_bucket(x - 1 us) counts the bounds before x (timestamps are whole microseconds).
    first = func.greatest(func.width_bucket(spans.c.created_at - ONE_MICROSECOND, bounds), 1)
    last = func.least(
        case((spans.c.left_at.is_(None), n), else_=func.width_bucket(spans.c.left_at - ONE_MICROSECOND, bounds) - 1), n
    )
    ranged = select(first.label("first"), last.label("last"), spans.c.assessment_name.label("name")).subquery("ranged")
    stmt = (
        select(ranged.c.first, ranged.c.last, ranged.c.name, func.count().label("n"))
        .where(ranged.c.first <= ranged.c.last)
        .group_by(ranged.c.first, ranged.c.last, ranged.c.name)
    )
    return list(conn.execute(stmt).mappings())


def _empty_series(buckets: Buckets) -> list[dict[str, Any]]:
    return [
        {
            "start": buckets.bounds[k - 1],
            "end": buckets.bounds[k],
            "label": buckets.label(k),
            "created": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "failureRate": None,
            "processingTimeSeconds": {"p50": None, "p95": None},
            "queueWaitSeconds": {"p50": None, "p95": None},
            "queuedAtEnd": None,
        }
        for k in range(1, len(buckets) + 1)
    ]


def _pct(values: list[float] | None) -> dict[str, float | None]:
    values = values or [None, None]  # type: ignore[list-item]
    return {"p50": None if values[0] is None else round(values[0], 2), "p95": None if values[1] is None else round(values[1], 2)}


def compute_trends(
    engine: Engine, buckets: Buckets, assessment_name: str | None, group_by: str | None, now: datetime
) -> dict[str, Any]:
    """Both statements at once, on two connections (as the stats are computed)."""
    by_name = group_by == "assessment_name"
    figures, spans = in_parallel(
        engine,
        lambda conn: _bucket_figures(conn, buckets, assessment_name, by_name),
        lambda conn: _queue_spans(conn, buckets, assessment_name),
    )
    series: dict[str | None, list[dict[str, Any]]] = {None: _empty_series(buckets)}
    for row in figures:
        key = None if not by_name or row["is_total"] else row["name"]
        target = series.setdefault(key, _empty_series(buckets))[row["k"] - 1]
        finished = row["completed"] + row["failed"]
        target.update(
            created=row["created"],
            **{name: row[name] for name in COUNTED},
            failureRate=round(row["failed"] / finished, 4) if finished else None,
            processingTimeSeconds=_pct(row["pt"]),
            queueWaitSeconds=_pct(row["qw"]),
        )
    # +n at the first end a span covers, -n after its last: a prefix sum is the queue at each end.
    steps: dict[str | None, list[int]] = {}
    for row in spans:
        for key in (None, row["name"]) if by_name else (None,):
            counts = steps.setdefault(key, [0] * (len(buckets) + 1))
            counts[row["first"] - 1] += row["n"]
            counts[row["last"]] -= row["n"]
    for key in steps:
        series.setdefault(key, _empty_series(buckets))
    for key, points in series.items():
        queue = accumulate(steps.get(key, [0] * (len(buckets) + 1)))
        for point, queued in zip(points, queue, strict=False):
            # The queue at an end still to come is not known yet.
            point["queuedAtEnd"] = queued if point["end"] <= now else None
    groups = [
        {"assessment_name": name, "series": points}
        for name, points in sorted(series.items(), key=lambda i: str(i[0]))
        if name is not None
    ]
    return {
        "bucket": buckets.bucket,
        "timezone": buckets.tz.key,
        "from": buckets.start,
        "to": buckets.end,
        "assessmentName": assessment_name,
        "groupBy": group_by,
        "series": series[None],
        "groups": groups if by_name else None,
    }
