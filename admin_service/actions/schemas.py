"""Schemas of the action routes (requests and answers; they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from admin_service.actions.store import ACTION_STATES, ITEM_STATES, KINDS
from admin_service.jobs.schemas import (
    EnvelopeSchema,
    JobFilterSchema,
    JobWithUserSchema,
    MomentField,
    StrictQuerySchema,
    storable_text,
)

MAX_REASON = 1000
REASON_REQUIRED = "A reason is required: say why (it is kept in the audit log with your name)."


def _reason(required: bool) -> fields.String:
    return fields.String(
        required=required,
        validate=[validate.Length(min=1, max=MAX_REASON), storable_text, lambda text: bool(text.strip()) or _blank()],
        metadata={"description": f"Why (1-{MAX_REASON} characters), kept in the audit log."},
        error_messages={"required": REASON_REQUIRED},
    )


def _blank() -> bool:
    raise ValidationError(REASON_REQUIRED)


class RetryJobSchema(Schema):
    reason = _reason(required=True)


class BulkActionSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    filter = fields.Nested(
        JobFilterSchema, required=True, metadata={"description": "Any filter of GET /admin/jobs (the same names and values)."}
    )
    reason = _reason(required=False)
    dry_run = fields.Boolean(load_default=False, metadata={"description": "Only count: answers a confirmation_token."})
    confirmation_token = fields.String(
        validate=validate.Length(min=1, max=2000), metadata={"description": "The dry run's token (required unless dry_run)."}
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("dry_run"):
            return
        errors: dict[str, list[str]] = {}
        if not data.get("reason"):
            errors["reason"] = [REASON_REQUIRED]
        if not data.get("confirmation_token"):
            errors["confirmation_token"] = ["Run a dry run first (dry_run: true) and send its confirmation_token."]
        if errors:
            raise ValidationError(errors)


class ActionListQuerySchema(StrictQuerySchema):
    requested_by = fields.UUID(metadata={"description": "Actions of this operator (user id)."})
    requested_by_email = fields.String(
        validate=[validate.Length(min=1, max=255), storable_text],
        metadata={"description": "Partial, case-insensitive match on the operator's email."},
    )
    kind = fields.String(validate=validate.OneOf(KINDS))
    state = fields.String(validate=validate.OneOf(ACTION_STATES))
    date_from = MomentField(metadata={"description": "Requested at or after this date/date-time."})
    date_to = MomentField(metadata={"description": "Requested up to this date-time; a plain date includes that whole day."})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))


class ActionItemsQuerySchema(StrictQuerySchema):
    item_state = fields.String(validate=validate.OneOf(ITEM_STATES), metadata={"description": "Only items in this state."})
    limit = fields.Integer(
        load_default=100, validate=validate.Range(min=1, max=1000), metadata={"description": "Items per page."}
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000))


class RequesterSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(allow_none=True, required=True)
    user_type = fields.String(required=True, metadata={"description": "their user_type when they asked"})


class CountsSchema(Schema):
    pending = fields.Integer(required=True, metadata={"description": "not handed to the platform yet (or to be retried)"})
    sent = fields.Integer(
        required=True, metadata={"description": "the platform confirmed the command; the job has not moved yet"}
    )
    picked_up = fields.Integer(required=True, metadata={"description": "capture saw the job leave failed after the send"})
    failed = fields.Integer(required=True, metadata={"description": "the owner refused the command"})
    skipped = fields.Integer(required=True, metadata={"description": "not failed, no longer failed, or cancelled before sending"})
    overdue = fields.Integer(
        required=True, metadata={"description": "of the sent ones, not picked up within ACTION_PICKUP_TIMEOUT_S"}
    )


class ActionSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    state = fields.String(required=True, metadata={"enum": list(ACTION_STATES)})
    reason = fields.String(required=True)
    requested_by = fields.Nested(RequesterSchema, required=True)
    filter = fields.Dict(allow_none=True, required=True, metadata={"description": "the filter as given; null for one job"})
    total = fields.Integer(required=True, metadata={"description": "jobs in the snapshot"})
    counts = fields.Nested(CountsSchema, required=True)
    transport = fields.String(required=True)
    created_at = fields.String(required=True)
    started_at = fields.String(allow_none=True, required=True)
    finished_at = fields.String(allow_none=True, required=True)
    cancelled_by = fields.String(allow_none=True, required=True)


class ItemSchema(Schema):
    id = fields.String(required=True, metadata={"description": "the command's idempotency key"})
    action_id = fields.String(required=True)
    position = fields.Integer(required=True)
    job_row_id = fields.String(required=True)
    job_id = fields.String(required=True)
    state = fields.String(required=True, metadata={"enum": list(ITEM_STATES)})
    reason = fields.String(allow_none=True, required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True, required=True)
    next_attempt_at = fields.String(allow_none=True, required=True)
    attempted_at = fields.String(allow_none=True, required=True)
    sent_at = fields.String(allow_none=True, required=True)
    picked_up_at = fields.String(allow_none=True, required=True)
    picked_up_status = fields.String(allow_none=True, required=True)
    overdue_at = fields.String(allow_none=True, required=True)


class ActionDetailSchema(ActionSchema):
    items = fields.List(fields.Nested(ItemSchema), required=True)


class DryRunSchema(Schema):
    dry_run = fields.Boolean(required=True)
    count = fields.Integer(required=True, metadata={"description": "jobs the filter matches now"})
    retryable = fields.Integer(required=True, metadata={"description": "of them, failed (the others would be skipped)"})
    cap = fields.Integer(required=True, metadata={"description": "ACTION_MAX_JOBS: the most one action may cover"})
    over_cap = fields.Boolean(required=True, metadata={"description": "count > cap: no token, narrow the filter"})
    sample = fields.List(fields.Nested(JobWithUserSchema), required=True, metadata={"description": "up to 10 matching jobs"})
    confirmation_token = fields.String(allow_none=True, required=True, metadata={"description": "null when over_cap"})
    expires_at = fields.String(allow_none=True, required=True)


class ActionPageSchema(Schema):
    actions = fields.List(fields.Nested(ActionSchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)


class ActionEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(ActionDetailSchema, required=True)


class DryRunEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(DryRunSchema, required=True)


class ActionPageEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(ActionPageSchema, required=True)
