"""GET /admin/jobs/export: its own blueprint, so that it draws on EXPORT_RATE_LIMIT instead of
the page views' RATE_LIMIT (ratelimit.limit_exports)."""

from __future__ import annotations

from typing import Any

from flask import Response, g

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.jobs import export
from admin_service.jobs.schemas import ExportQuerySchema
from admin_service.services import services

blp = ApiBlueprint(
    "export",
    __name__,
    url_prefix="/admin/jobs",
    description="The job list as a file (CSV or NDJSON), streamed. Admin token required; its own rate limit.",
)

EXPORT_HEADERS = {
    "Content-Disposition": {
        "description": "attachment; filename=jobs_<filters>_<UTC time>[_first<N>].<format>",
        "schema": {"type": "string"},
    },
    "X-Export-Truncated": {
        "description": "true when more jobs matched (at the start) than EXPORT_MAX_ROWS: the file holds the first EXPORT_MAX_ROWS",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
    "X-Export-Max-Rows": {"description": "EXPORT_MAX_ROWS", "schema": {"type": "integer"}},
}
EXPORT_RESPONSE = {
    "description": "The jobs in list order: CSV (a header row naming the columns: the job's columns, then "
    "user_email, user_username) or NDJSON (one job per line, as the list shows it). A download that ends without "
    "its final chunk (an incomplete read) failed mid-way and must be discarded.",
    "headers": EXPORT_HEADERS,
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


@blp.before_request
def _authenticate() -> None:
    require_admin()


@blp.route("/export")
@blp.arguments(ExportQuerySchema, location="query")
@blp.errors(400, 401, 403, 429, 503)
@blp.doc(security=[{"bearerAuth": []}], responses={200: EXPORT_RESPONSE})
def export_jobs(args: dict[str, Any]) -> Response:
    """Export jobs

    Every filter and sort of the list; no paging: the whole list, up to EXPORT_MAX_ROWS jobs
    (X-Export-Truncated says when the cap cut it), streamed in keyset batches. CSV cells of text
    that starts like a spreadsheet formula (= + - @, tab, CR) get a leading apostrophe.
    Rate-limited by EXPORT_RATE_LIMIT, apart from the other routes.
    """
    used = services()
    settings = used.settings
    with used.engine.connect() as conn:
        plan = export.plan_export(conn, args, settings.tz, settings.export_max_rows, settings.export_batch_rows)
    admin = g.get("admin")
    fields = {"request_id": g.get("request_id"), "user_id": admin.id if admin else None}
    response = Response(export.stream(used.engine, plan, fields), content_type=export.MEDIA_TYPES[plan.fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{plan.filename}"'
    response.headers["X-Export-Truncated"] = "true" if plan.truncated else "false"
    response.headers["X-Export-Max-Rows"] = str(plan.max_rows)
    # nginx: pass the stream on as it comes, so a slow or gone client holds the export back.
    response.headers["X-Accel-Buffering"] = "no"
    return response
