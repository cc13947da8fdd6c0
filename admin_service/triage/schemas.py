"""Query and response schemas of the triage routes (they also make the OpenAPI document)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from admin_service.jobs.schemas import EnvelopeSchema, MomentField, StrictQuerySchema, _text
from admin_service.triage.ranges import BUCKETS

GROUP_BY = ("assessment_name",)


class RangeQuerySchema(StrictQuerySchema):
    # `from` is a Python keyword: loaded as date_from/date_to, as the list names them.
    date_from = MomentField(
        data_key="from",
        metadata={"description": "Start: a date (that whole day, in STATS_TIMEZONE) or a date-time."},
    )
    date_to = MomentField(
        data_key="to",
        metadata={"description": "End, included: a date (that whole day) or a date-time. Default: now."},
    )
    assessment_name = _text("Partial, case-insensitive match on the assessment name (as the job list's filter).")
    fresh = fields.Boolean(
        load_default=False, metadata={"description": "Recompute now instead of serving figures shared for the interval."}
    )


class FailuresQuerySchema(RangeQuerySchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000), metadata={"description": "Page of groups."})
    limit = fields.Integer(
        load_default=20, validate=validate.Range(min=1, max=100), metadata={"description": "Groups per page, 1-100."}
    )


class TrendsQuerySchema(RangeQuerySchema):
    bucket = fields.String(
        load_default="day",
        validate=validate.OneOf(BUCKETS),
        metadata={"description": "hour (range up to 7 days), day (up to 90 days) or week (up to 366 days)."},
    )
    group_by = fields.String(
        validate=validate.OneOf(GROUP_BY), metadata={"description": "assessment_name: a series per assessment as well."}
    )


# --- responses -------------------------------------------------------------------------


class SharedSchema(Schema):
    ageMs = fields.Float(required=True, metadata={"description": "age of these figures; 0 when computed for this request"})
    intervalMs = fields.Integer(
        required=True, metadata={"description": "how long figures of the same range are shared (TRIAGE_SHARE_MS)"}
    )


class FailureRangeSchema(Schema):
    from_ = fields.DateTime(required=True, data_key="from", metadata={"description": "first day's local midnight"})
    to = fields.DateTime(required=True, metadata={"description": "the local midnight after the last day (excluded)"})
    firstDay = fields.String(required=True)
    lastDay = fields.String(required=True)
    days = fields.Integer(required=True)
    timezone = fields.String(required=True)


class DayCountSchema(Schema):
    date = fields.String(required=True)
    count = fields.Integer(required=True)


class ListFilterSchema(Schema):
    status = fields.String(required=True)
    signature = fields.String(required=True)
    date_from = fields.String(required=True)
    date_to = fields.String(required=True)
    assessment_name = fields.String()


class FailureGroupSchema(Schema):
    signature = fields.String(required=True, metadata={"description": "the message with its variable parts as placeholders"})
    example = fields.String(allow_none=True, required=True, metadata={"description": "the newest raw message of the group"})
    count = fields.Integer(required=True)
    share = fields.Float(required=True, metadata={"description": "count / totalFailures (0-1)"})
    firstSeen = fields.DateTime(required=True)
    lastSeen = fields.DateTime(required=True)
    perDay = fields.List(fields.Nested(DayCountSchema), required=True, metadata={"description": "every day of the range"})
    assessments = fields.List(fields.String(), required=True)
    sampleJobIds = fields.List(fields.UUID(), required=True, metadata={"description": "row ids of the newest jobs"})
    filter = fields.Nested(ListFilterSchema, required=True, metadata={"description": "GET /admin/jobs query of its jobs"})
    listUrl = fields.String(required=True)


class GroupPaginationSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "groups"})
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    totalPages = fields.Integer(required=True)
    hasNext = fields.Boolean(required=True)
    hasPrev = fields.Boolean(required=True)


class RollupBasisSchema(Schema):
    days = fields.Integer(required=True, metadata={"description": "days of the range read from the rollup of closed days"})
    liveDays = fields.Integer(
        required=True,
        metadata={"description": "days read from the jobs table (today, days being rolled up again, days older than it keeps)"},
    )
    builtAt = fields.DateTime(
        allow_none=True, required=True, metadata={"description": "when the oldest of the rolled-up days used was built"}
    )


class FailuresSchema(Schema):
    range = fields.Nested(FailureRangeSchema, required=True)
    assessmentName = fields.String(allow_none=True, required=True)
    rollup = fields.Nested(
        RollupBasisSchema,
        required=True,
        metadata={
            "description": "where the figures come from: closed days rolled up (CLOSED_DAYS, kept exact from "
            "captured changes), the rest from the jobs table"
        },
    )
    totalFailures = fields.Integer(required=True)
    groups = fields.List(fields.Nested(FailureGroupSchema), required=True)
    pagination = fields.Nested(GroupPaginationSchema, required=True)
    computedAt = fields.DateTime(required=True)
    shared = fields.Nested(SharedSchema, required=True)


class FailuresEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(FailuresSchema, required=True)


class TwoPercentilesSchema(Schema):
    p50 = fields.Float(allow_none=True, required=True)
    p95 = fields.Float(allow_none=True, required=True)


class TrendPointSchema(Schema):
    start = fields.DateTime(required=True)
    end = fields.DateTime(required=True)
    label = fields.String(required=True, metadata={"description": "local date, or local hour with its UTC offset"})
    created = fields.Integer(required=True, metadata={"description": "jobs created in the bucket"})
    completed = fields.Integer(required=True, metadata={"description": "of those, completed now"})
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)
    failureRate = fields.Float(allow_none=True, required=True, metadata={"description": "failed / (completed + failed)"})
    processingTimeSeconds = fields.Nested(TwoPercentilesSchema, required=True)
    queueWaitSeconds = fields.Nested(TwoPercentilesSchema, required=True)
    queuedAtEnd = fields.Integer(allow_none=True, required=True, metadata={"description": "null for an end still to come"})


class TrendGroupSchema(Schema):
    assessment_name = fields.String(required=True)
    series = fields.List(fields.Nested(TrendPointSchema), required=True)


class TrendsSchema(Schema):
    bucket = fields.String(required=True)
    timezone = fields.String(required=True)
    from_ = fields.DateTime(required=True, data_key="from", metadata={"description": "first bucket's start"})
    to = fields.DateTime(required=True, metadata={"description": "last bucket's end"})
    assessmentName = fields.String(allow_none=True, required=True)
    groupBy = fields.String(allow_none=True, required=True)
    series = fields.List(fields.Nested(TrendPointSchema), required=True)
    groups = fields.List(fields.Nested(TrendGroupSchema), allow_none=True, required=True)
    computedAt = fields.DateTime(required=True)
    shared = fields.Nested(SharedSchema, required=True)


class TrendsEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(TrendsSchema, required=True)
