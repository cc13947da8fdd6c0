"""REST endpoints of the jobs feature: /admin/jobs/..."""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import Connection

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.errors import envelope, not_found
from admin_service.jobs import queries
from admin_service.jobs.schemas import (
    AssessmentNamesEnvelopeSchema,
    JobDetailsEnvelopeSchema,
    JobListEnvelopeSchema,
    JobListQuerySchema,
    JobResultEnvelopeSchema,
    StatsEnvelopeSchema,
    StatsQuerySchema,
)
from admin_service.jobs.serialize import json_as_text
from admin_service.services import services

blp = ApiBlueprint(
    "jobs",
    __name__,
    url_prefix="/admin/jobs",
    description="Analysis jobs: statistics, list, details and results. Admin token required.",
)
SECURED: dict[str, Any] = {"security": [{"bearerAuth": []}]}


def job_link(path: str, description: str) -> dict[str, Any]:
    """An OpenAPI link from a job list to an operation on its first job (operationRef: the
    document has no operationIds). Clients read where a listed id goes; schemathesis's
    stateful run (make fuzz) follows it."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/get",
        "parameters": {"job_ref": "$response.body#/data/jobs/0/id"},
        "description": description,
    }


LIST_LINKS = {
    "JobDetails": job_link("/admin/jobs/{job_ref}", "The first listed job's details."),
    "JobResults": job_link("/admin/jobs/{job_ref}/results", "The first listed job's result."),
    "JobTimeline": job_link("/admin/jobs/{job_ref}/events", "The first listed job's timeline."),
}


def find_job(conn: Connection, job_ref: str) -> dict[str, Any]:
    """The job a path names, or a 404 NOT_FOUND."""
    job = queries.find_job(conn, job_ref)
    if job is None:
        raise not_found(f"Job {job_ref!r} not found")
    return job


@blp.before_request
def _authenticate() -> None:
    require_admin()


@blp.route("/stats")
@blp.arguments(StatsQuerySchema, location="query")
@blp.response(200, StatsEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(**SECURED)
def job_stats(args: dict[str, Any]) -> Response:
    """Job statistics

    Counts per status, today's figures, processing-time percentiles over the performance
    window, 7 days of daily metrics and the newest system metrics. Shared by all callers and
    recomputed at most once per JOB_STATS_INTERVAL_MS; `fresh=true` forces a recomputation.
    """
    data, age_ms = services().stats.get(0 if args["fresh"] else None)
    message = "Job statistics (computed now)" if age_ms == 0 else f"Job statistics (shared, computed {age_ms:.0f} ms ago)"
    return envelope(data, message)


@blp.route("")
@blp.arguments(JobListQuerySchema, location="query")
@blp.response(200, JobListEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(**SECURED, responses={200: {"links": LIST_LINKS}})
def list_jobs(args: dict[str, Any]) -> Response:
    """List jobs

    Filters combine with AND. Ordered by sort_by then id (stable). Offset paging with
    `page`, or keyset paging with `cursor` (pagination.nextCursor) at constant cost.
    """
    used = services()
    with used.engine.connect() as conn:
        counts = queries.ListCounts(
            used.settings.admin_schema, used.settings.list_count_interval_ms / 1000, used.settings.db_statement_timeout_ms / 1000
        )
        data = queries.list_jobs(conn, args, used.settings.tz, used.stats, counts)
    return envelope(data, "Jobs retrieved")


@blp.route("/<string:job_ref>")
@blp.response(200, JobDetailsEnvelopeSchema)
@blp.errors(401, 403, 404, 429, 503)
@blp.doc(**SECURED)
def job_details(job_ref: str) -> Response:
    """Job details

    `job_ref` is the job's row id or its job_id.
    """
    with services().engine.connect() as conn:
        job = find_job(conn, job_ref)
    return envelope(queries.job_details(job), "Job details retrieved")


@blp.route("/<string:job_ref>/results")
@blp.response(200, JobResultEnvelopeSchema)
@blp.errors(401, 403, 404, 429, 503)
@blp.doc(**SECURED)
def job_results(job_ref: str) -> Response:
    """Job results

    404 NOT_FOUND when the job does not exist; 404 RESULT_NOT_FOUND when it has no result.
    """
    with services().engine.connect() as conn:
        job = find_job(conn, job_ref)
        # Read with its JSON columns as text, spliced into the answer unparsed.
        row = (
            conn.execute(json_as_text(queries.FIND_RESULT), {"id": job["result_id"]}).mappings().first()
            if job["result_id"]
            else None
        )
        result = dict(row) if row else None
    if result is None:
        raise not_found(f"Job {job_ref!r} has no result", code="RESULT_NOT_FOUND")
    keys = ("id", "job_id", "status", "assessment_name", "completed_at", "user_id", "created_at")
    return envelope({"job": {k: job[k] for k in keys}, "result": result}, "Job results retrieved")


@blp.route("/assessment-names")
@blp.response(200, AssessmentNamesEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(**SECURED)
def assessment_names() -> Response:
    """Assessment names

    The distinct assessment names the jobs have (what the `assessment_name` filter can match),
    read by one index probe per name.
    """
    with services().engine.connect() as conn:
        names = queries.assessment_names(conn)
    return envelope({"names": names}, "Assessment names retrieved")
