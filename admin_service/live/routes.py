"""REST views over the event log (live/log.py): a job's timeline (the alerts: live/alert_routes.py)."""

from __future__ import annotations

from typing import cast

import psycopg2.extras
from flask import Response
from marshmallow import Schema, fields

from admin_service.actions.store import ActionStore
from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.db.dbapi import Cursor
from admin_service.errors import envelope
from admin_service.jobs.routes import find_job
from admin_service.jobs.schemas import EnvelopeSchema
from admin_service.live.history import action_entries, full_timeline, with_actions
from admin_service.services import services

blp = ApiBlueprint("events", __name__, url_prefix="/admin/jobs", description="The job event log: timelines.")


class LoggedEventSchema(Schema):
    id = fields.Integer(required=True, metadata={"description": "event log id (SSE id)"})
    event = fields.String(required=True, metadata={"description": "job-update or job-alert"})
    kind = fields.String(required=True)
    occurred_at = fields.DateTime(required=True)
    payload = fields.Dict(required=True, metadata={"description": "what subscribers received"})


class TimelineEntrySchema(Schema):
    id = fields.Integer(
        allow_none=True, required=True, metadata={"description": "event log id (SSE id); null for a derived step"}
    )
    event = fields.String(required=True, metadata={"description": "job-update, job-alert, or job-action (an operator's action)"})
    kind = fields.String(
        required=True,
        metadata={
            "description": "the event's kind; for a derived step: created, processing, completed, failed or cancelled; "
            "for an action: retry-requested"
        },
    )
    status = fields.String(allow_none=True, required=True, metadata={"description": "the job's status at this step"})
    occurred_at = fields.DateTime(
        required=True, metadata={"description": "when it was logged; for a derived step, the row's timestamp"}
    )
    payload = fields.Dict(
        required=True,
        metadata={"description": "what subscribers received; for a derived step, what the row adds (retry_count, error_message)"},
    )
    derived = fields.Boolean(
        required=True, metadata={"description": "true: shown by the job's row itself, not by a logged event"}
    )
    source = fields.String(
        required=True,
        metadata={
            "description": "event-log, action-log (an operator's action: who, why, what became of it), or the row's column a "
            "derived step comes from (created_at, processing_started_at, completed_at, updated_at)"
        },
    )


class TimelineSchema(Schema):
    events = fields.List(fields.Nested(TimelineEntrySchema), required=True)


class TimelineEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(TimelineSchema, required=True)


@blp.before_request
def _authenticate() -> None:
    require_admin()


@blp.route("/<string:job_ref>/events")
@blp.response(200, TimelineEnvelopeSchema)
@blp.errors(401, 403, 404, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def job_timeline(job_ref: str) -> Response:
    """Job timeline

    Every logged event of one job, oldest first, with the steps the job's row itself proves
    (created, started processing, ended) that no logged event shows, marked `derived` (a job
    older than the event log, or a change that polling merged with the next one).
    """
    used = services()
    with used.engine.connect() as conn:
        job = find_job(conn, job_ref)
        events = used.runtime.event_log.timeline(conn, job["id"])
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = cast(Cursor, raw.cursor(cursor_factory=psycopg2.extras.RealDictCursor))
        try:
            actions = ActionStore(used.settings.admin_schema).for_job(cur, job["id"])
        finally:
            cur.close()
    return envelope({"events": with_actions(full_timeline(job, events), action_entries(actions))}, "Job timeline")
