"""REST endpoints of failure triage and trends: /admin/jobs/failures, /admin/jobs/trends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Response, current_app

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.db.engine import transaction
from admin_service.errors import envelope
from admin_service.services import services
from admin_service.triage.cache import IntervalCache
from admin_service.triage.failures import day_range, failure_groups
from admin_service.triage.ranges import DEFAULT_SPAN, MAX_RANGE, cut, resolve_range
from admin_service.triage.schemas import (
    FailuresEnvelopeSchema,
    FailuresQuerySchema,
    TrendsEnvelopeSchema,
    TrendsQuerySchema,
)
from admin_service.triage.trends import compute_trends

blp = ApiBlueprint(
    "triage",
    __name__,
    url_prefix="/admin/jobs",
    description="Failure triage (failed jobs grouped by error signature) and trends over a range. Admin token required.",
)
SECURED: dict[str, Any] = {"security": [{"bearerAuth": []}]}


def _shared(name: str, key: Any, compute: Callable[[], dict[str, Any]], fresh: bool) -> tuple[dict[str, Any], str]:
    """`compute()`'s answer shared per key for TRIAGE_SHARE_MS. One cache per app and process, as
    the stats are: the key is the whole-bucket range, so every request in the same buckets (a
    dashboard's "last 7 days" all day long) shares one computation per interval."""
    interval = services().settings.triage_share_ms
    caches: dict[str, IntervalCache[dict[str, Any]]] = current_app.extensions.setdefault("admin_service.triage", {})
    cache = caches.get(name) or caches.setdefault(name, IntervalCache(interval))
    value, age_ms = cache.get(key, compute, fresh=fresh)
    how = "computed now" if age_ms == 0 else f"shared, computed {age_ms:.0f} ms ago"
    return {**value, "shared": {"ageMs": round(age_ms, 1), "intervalMs": interval}}, how


@blp.before_request
def _authenticate() -> None:
    require_admin()


@blp.route("/failures")
@blp.arguments(FailuresQuerySchema, location="query")
@blp.response(200, FailuresEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(**SECURED)
def job_failures(args: dict[str, Any]) -> Response:
    """Failures grouped by error signature

    Failed jobs created in whole days `from`..`to` (stats time zone; default the last 7 days,
    at most 90) grouped by their error signature: numbers, uuids, hex ids, quoted values,
    paths and timestamps replaced by placeholders. Sorted by count, paged. Each group has the
    list filter (`filter`, `listUrl`) that lists its jobs. Shared for TRIAGE_SHARE_MS
    per range (`data.shared`); `fresh=true` recomputes.
    """
    used = services()
    now = datetime.now(UTC)
    days = day_range(args, used.settings.tz, now)
    name, page, limit = args.get("assessment_name"), args["page"], args["limit"]

    def compute() -> dict[str, Any]:
        with transaction(used.engine, "REPEATABLE READ") as conn:
            rollup = used.runtime.failure_rollup if used.settings.closed_days else None
            groups = failure_groups(conn, rollup, days, name, page, limit, used.settings.db_statement_timeout_ms)
            return {**groups, "computedAt": datetime.now(UTC)}

    data, how = _shared("failures", (days.bounds, days.tz.key, name, page, limit), compute, args["fresh"])
    return envelope(data, f"Failure groups ({how})")


@blp.route("/trends")
@blp.arguments(TrendsQuerySchema, location="query")
@blp.response(200, TrendsEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(**SECURED)
def job_trends(args: dict[str, Any]) -> Response:
    """Trends per hour, day or week

    Per bucket of `from`..`to` (widened to whole buckets in the stats time zone, DST-correct;
    zero-filled): jobs created, of those completed/failed/cancelled, failure rate, p50/p95
    processing time and queue wait, and the jobs queued at the bucket's end. Ranges up to 7 days
    by hour, 90 by day, 366 by week. `group_by=assessment_name` adds a series per assessment.
    Shared for TRIAGE_SHARE_MS per range (`data.shared`); `fresh=true` recomputes.
    """
    used = services()
    tz, bucket = used.settings.tz, args["bucket"]
    now = datetime.now(UTC)
    start, end = resolve_range(
        args.get("date_from"), args.get("date_to"), tz, now, DEFAULT_SPAN[bucket], MAX_RANGE[bucket], f"for bucket={bucket}"
    )
    buckets = cut(start, end, bucket, tz)
    name, group_by = args.get("assessment_name"), args.get("group_by")

    def compute() -> dict[str, Any]:
        computed = datetime.now(UTC)
        return {**compute_trends(used.engine, buckets, name, group_by, computed), "computedAt": computed}

    data, how = _shared("trends", (buckets.bounds, tz.key, bucket, name, group_by), compute, args["fresh"])
    return envelope(data, f"Job trends ({how})")
