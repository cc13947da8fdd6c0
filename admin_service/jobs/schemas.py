"""Marshmallow schemas of every jobs query and response (they also make the OpenAPI document)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from admin_service.clock import NotAnInstant, parse_instant
from admin_service.jobs.status import ALIASES, STATUSES, UnknownStatus, parse_statuses
from admin_service.triage.signature import SIGNATURE_MAX

SORT_FIELDS = ("created_at", "updated_at", "completed_at", "status", "priority")
COUNT_MODES = ("exact", "estimated", "none")
MAX_TEXT = 255
MAX_STATUS_TEXT = 200


def comma_list(names: tuple[str, ...]) -> str:
    """The pattern of a comma-separated list of these names (for the OpenAPI document)."""
    one = "|".join(sorted(names, key=len, reverse=True))
    return f"^({one})(,({one}))*$"


class Moment:
    """A date_from/date_to value: a plain date means the whole day in the stats time zone."""

    def __init__(self, value: datetime | date) -> None:
        self.value = value

    @property
    def date_only(self) -> bool:
        return not isinstance(self.value, datetime)

    def start(self, tz: Any) -> datetime:
        if isinstance(self.value, datetime):
            return self.value
        return datetime.combine(self.value, time.min, tzinfo=tz)

    def __repr__(self) -> str:
        return f"Moment({self.value!r})"


class DocumentedField(fields.Field):
    """A custom field with its OpenAPI schema (apispec cannot infer one): `openapi` is merged into metadata."""

    openapi: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {**self.openapi, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)


class MomentField(DocumentedField):
    """ISO date (2026-11-28) or date-time (2026-11-28T10:00:00Z; naive means UTC)."""

    default_error_messages = {"invalid": "Not a valid ISO-8601 date or date-time."}
    openapi = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Moment:
        if not isinstance(value, str) or not 8 <= len(value) <= 40:
            raise self.make_error("invalid")
        text = value.strip()
        try:
            # Any ISO date form (2026-11-28, 20261128) is a whole day, not its first instant.
            return Moment(date.fromisoformat(text))
        except ValueError:
            pass
        # An unencoded "+" of an offset arrives as a space.
        try:
            return Moment(parse_instant(text.replace(" ", "+") if text.count(" ") == 1 and "T" in text else text))
        except NotAnInstant as exc:
            raise (self.make_error("invalid") if exc.malformed else ValidationError(str(exc))) from None


class StatusListField(DocumentedField):
    """`status=failed`, `status=queued,processing` or `status=queued&status=processing` (the
    repeated form is joined by StrictQuerySchema); `queue` is read as `queued`."""

    joins_repeats = True
    openapi = {"type": "string", "maxLength": MAX_STATUS_TEXT, "pattern": comma_list(STATUSES + tuple(ALIASES))}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str) or len(value) > MAX_STATUS_TEXT:
            raise ValidationError("Must be a comma-separated list of statuses.")
        try:
            return parse_statuses(value.split(","))
        except UnknownStatus as exc:
            raise ValidationError(f"Unknown status {exc.text!r}; use one of {', '.join(STATUSES)}.") from None


class SortOrderField(fields.String):
    """ASC or DESC in any case, loaded as upper case."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {"enum": ["ASC", "DESC", "asc", "desc"], **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        order = str(super()._deserialize(value, attr, data, **kwargs)).upper()
        if order not in ("ASC", "DESC"):
            raise ValidationError("Must be ASC or DESC.")
        return order


def text_problem(value: str) -> str | None:
    """Why this text cannot reach the database or an answer, None when it can: the one check of
    client text (query parameters, cursor values, Socket.IO filters). PostgreSQL text cannot
    hold NUL (psycopg2 refuses to send it), and a lone surrogate ("\\ud800" in JSON: cursors,
    Socket.IO payloads) cannot be encoded as UTF-8 at all, for psycopg2 nor for the answer."""
    if "\x00" in value:
        return "Must not contain a NUL character."
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Must be valid Unicode text (no lone surrogates)."
    return None


def storable_text(value: str) -> None:
    """text_problem as a marshmallow validator."""
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(problem)


def _text(description: str) -> fields.String:
    return fields.String(
        validate=[validate.Length(min=1, max=MAX_TEXT), storable_text],
        metadata={"description": description, "pattern": "^[^\\u0000]*$"},
    )


class StrictQuerySchema(Schema):
    """Query schemas reject what they do not know (api.StrictParser raises on unknown query
    parameters) and a scalar parameter given twice."""

    @pre_load
    def _reject_repeated(self, data: Any, **kwargs: Any) -> Any:
        # webargs hands a MultiDict; a repeated scalar parameter is ambiguous, so name it. A
        # list field written as a comma list (status) takes the repeated form too, joined.
        getlist = getattr(data, "getlist", None)
        if getlist is None:
            return data
        joined: dict[str, Any] = {}
        for key in set(data.keys()):
            if key not in self.fields or isinstance(self.fields[key], fields.List) or len(getlist(key)) <= 1:
                continue
            values = getlist(key)
            if not getattr(self.fields[key], "joins_repeats", False):
                raise ValidationError("Give this parameter once.", field_name=key)
            if not all(isinstance(v, str) for v in values):
                raise ValidationError("Must be a comma-separated list.", field_name=key)
            joined[key] = ",".join(values)
        if not joined:
            return data
        return {**{key: data[key] for key in data.keys()}, **joined}


class JobFilterSchema(StrictQuerySchema):
    """Which jobs: the list's filters, and the filter of a bulk action (one way to filter)."""

    status = StatusListField(
        metadata={"description": "Status, comma-separated statuses or the parameter repeated (`queue` means `queued`)."}
    )
    user_id = fields.UUID(metadata={"description": "Jobs of this user."})
    user_email = _text("Partial, case-insensitive match on the user's email.")
    user_username = _text("Partial, case-insensitive match on the user's username.")
    assessment_name = _text("Partial, case-insensitive match on the assessment name.")
    search = _text(
        "Any of: the job's row id (exact uuid), its job_id (prefix, case-sensitive), the user's email or username, "
        "the assessment name or the error message (partial, case-insensitive). % and _ match themselves."
    )
    signature = fields.String(
        validate=[validate.Length(min=1, max=SIGNATURE_MAX), storable_text],
        metadata={"description": "Jobs whose error message has this error signature (GET /admin/jobs/failures)."},
    )
    date_from = MomentField(metadata={"description": "created_at at or after this date/date-time."})
    date_to = MomentField(metadata={"description": "created_at up to this date-time; a plain date includes that whole day."})


class JobListQuerySchema(JobFilterSchema):
    page = fields.Integer(
        load_default=1, validate=validate.Range(min=1, max=1_000_000), metadata={"description": "Page number (offset paging)."}
    )
    limit = fields.Integer(
        load_default=50, validate=validate.Range(min=1, max=100), metadata={"description": "Rows per page, 1-100."}
    )
    sort_by = fields.String(
        load_default="created_at",
        validate=validate.OneOf(SORT_FIELDS),
        metadata={
            "description": "Rows are ordered by the column, then id (completed_at: NULLs last); priority by "
            "priority, created_at, id; status by status (queue shown as queued), priority, created_at, id."
        },
    )
    sort_order = SortOrderField(load_default="DESC", metadata={"description": "ASC or DESC, any case."})
    cursor = fields.String(
        validate=validate.Length(min=1, max=512),
        metadata={"description": "Keyset cursor from pagination.nextCursor: constant cost at any depth."},
    )
    count = fields.String(
        load_default="exact",
        validate=validate.OneOf(COUNT_MODES),
        metadata={
            "description": "How pagination.total is computed: exact, estimated (planner) or none. On a big table "
            "(over 100,000 jobs) an exact total of a list filtered by status only comes from the shared per-status "
            "counts (pagination.countMode exact-cached)."
        },
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        # date_from after date_to is checked by queries.JobFilters: a plain date_to ends at midnight
        # in the stats time zone, which this schema does not know.
        if data.get("cursor") and data.get("page", 1) != 1:
            raise ValidationError("Use either page or cursor, not both.", field_name="cursor")


EXPORT_FORMATS = ("csv", "ndjson")


class ExportQuerySchema(JobListQuerySchema):
    """The list's filters and sort (every one of them, whatever the list gains), without its paging."""

    class Meta:
        exclude = ("page", "limit", "cursor", "count")

    format = fields.String(
        load_default="csv",
        validate=validate.OneOf(EXPORT_FORMATS),
        metadata={"description": "csv (a header row, then one row per job) or ndjson (one job object per line)."},
    )


class UserJobsQuerySchema(JobListQuerySchema):
    """A user's jobs: the list's paging, sort and status filter; the user is the path's."""

    class Meta:
        exclude = ("user_id", "user_email", "user_username", "search", "assessment_name", "date_from", "date_to")


class StatsQuerySchema(StrictQuerySchema):
    fresh = fields.Boolean(load_default=False, metadata={"description": "Recompute now instead of serving the shared figures."})


# --- responses -------------------------------------------------------------------------


class EnvelopeSchema(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"description": "ISO-8601 UTC"})


class ErrorDetailSchema(Schema):
    field = fields.String(required=True)
    message = fields.String(required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.List(fields.Nested(ErrorDetailSchema), required=True)


class ErrorEnvelopeSchema(Schema):
    success = fields.Boolean(required=True, metadata={"description": "always false"})
    error = fields.Nested(ErrorBodySchema, required=True)
    timestamp = fields.String(required=True)


class UserSummarySchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    username = fields.String(allow_none=True, required=True)


class JobSchema(Schema):
    id = fields.UUID(required=True)
    job_id = fields.String(required=True)
    user_id = fields.UUID(required=True)
    status = fields.String(required=True)
    result_id = fields.UUID(allow_none=True, required=True)
    error_message = fields.String(allow_none=True, required=True)
    completed_at = fields.DateTime(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    assessment_name = fields.String(allow_none=True, required=True)
    priority = fields.Integer(allow_none=True, required=True)
    retry_count = fields.Integer(allow_none=True, required=True)
    max_retries = fields.Integer(allow_none=True, required=True)
    processing_started_at = fields.DateTime(allow_none=True, required=True)


class JobWithUserSchema(JobSchema):
    user = fields.Nested(UserSummarySchema, allow_none=True, required=True)


class JobDetailsSchema(JobWithUserSchema):
    processingTimeSeconds = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "completed_at - processing_started_at (or created_at); for a running job, time so far."},
    )
    queueWaitSeconds = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "processing_started_at - created_at; for a queued job, time waited so far."},
    )


class PaginationSchema(Schema):
    total = fields.Integer(allow_none=True, required=True, metadata={"description": "null when count=none"})
    countMode = fields.String(
        required=True,
        metadata={
            "description": "How total was obtained: exact (counted now), exact-cached (count=exact on a big table "
            "filtered by status only: the shared per-status counts, exact when computed and at most "
            "JOB_STATS_INTERVAL_MS old; any other filter: counted once per LIST_COUNT_INTERVAL_MS for the "
            "deployment; countedAt says when), estimated (planner) or none"
        },
    )
    countedAt = fields.DateTime(
        allow_none=True,
        metadata={"description": "exact-cached: the instant total was exact at (at most the interval old); else null"},
    )
    page = fields.Integer(allow_none=True, required=True, metadata={"description": "null on cursor pages"})
    limit = fields.Integer(required=True)
    totalPages = fields.Integer(allow_none=True, required=True)
    hasNext = fields.Boolean(required=True)
    hasPrev = fields.Boolean(required=True)
    nextCursor = fields.String(allow_none=True, required=True)


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobWithUserSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class JobListEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(JobListSchema, required=True)


class UserJobListSchema(JobListSchema):
    user = fields.Nested(
        UserSummarySchema,
        allow_none=True,
        required=True,
        metadata={"description": "The user; null when its row is gone but jobs of it remain."},
    )


class UserJobListEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(UserJobListSchema, required=True)


class JobDetailsEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(JobDetailsSchema, required=True)


class ResultJobSchema(Schema):
    id = fields.UUID(required=True)
    job_id = fields.String(required=True)
    status = fields.String(required=True)
    assessment_name = fields.String(allow_none=True, required=True)
    completed_at = fields.DateTime(allow_none=True, required=True)
    user_id = fields.UUID(required=True)
    created_at = fields.DateTime(required=True)


class JobResultSchema(Schema):
    job = fields.Nested(ResultJobSchema, required=True)
    result = fields.Dict(
        required=True,
        metadata={"description": "The result row: every column the results table has (test_data, test_result, ...)."},
    )


class JobResultEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(JobResultSchema, required=True)


class CountsBasisSchema(Schema):
    method = fields.String(
        required=True,
        metadata={"description": "maintained (from captured changes, reconciled by a full count) or counted (counted now)"},
    )
    reconciledAt = fields.DateTime(metadata={"description": "maintained: when the last full count replaced them"})
    changesSince = fields.Integer(metadata={"description": "maintained: status changes applied since that count"})
    capture = fields.String(metadata={"description": "maintained: capture's mode, exact (every change) or poll (sampled)"})
    countedAt = fields.DateTime(metadata={"description": "counted: when"})


class ComputedBySchema(Schema):
    process = fields.String(allow_none=True, required=True, metadata={"description": "host:pid of the computing process"})
    basis = fields.String(
        required=True,
        metadata={
            "description": "leader (published once per interval for the deployment), local (fresh=true) "
            "or fallback (no leader published in time)"
        },
    )


class OverviewSchema(Schema):
    total = fields.Integer(required=True)
    queued = fields.Integer(required=True)
    processing = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)
    successRate = fields.Float(required=True, metadata={"description": "completed / (completed + failed) in percent, all time"})
    avgProcessingTimeMinutes = fields.String(required=True, metadata={"description": "over the performance window, 2 decimals"})
    countsBasis = fields.Nested(CountsBasisSchema, metadata={"description": "how the counts per status were obtained"})


class TodaySchema(Schema):
    date = fields.String(required=True)
    timezone = fields.String(required=True)
    total = fields.Integer(required=True, metadata={"description": "jobs created today"})
    completed = fields.Integer(required=True, metadata={"description": "of those, completed"})
    failed = fields.Integer(required=True, metadata={"description": "of those, failed"})


class PercentilesSchema(Schema):
    avg = fields.Float(allow_none=True, required=True)
    p50 = fields.Float(allow_none=True, required=True)
    p95 = fields.Float(allow_none=True, required=True)
    p99 = fields.Float(allow_none=True, required=True)


class WindowSchema(Schema):
    hours = fields.Integer(required=True)
    start = fields.DateTime(required=True)
    end = fields.DateTime(required=True)
    basis = fields.String(required=True)


class PerformanceSchema(Schema):
    window = fields.Nested(WindowSchema, required=True)
    sampleSize = fields.Integer(required=True, metadata={"description": "completed jobs in the window"})
    avgProcessingTimeSeconds = fields.Integer(allow_none=True, required=True)
    avgProcessingTimeMinutes = fields.String(required=True)
    processingTimeSeconds = fields.Nested(PercentilesSchema, required=True)
    queueWaitSeconds = fields.Nested(PercentilesSchema, required=True)
    oldestQueuedJobAgeSeconds = fields.Float(allow_none=True, required=True)
    oldestQueuedJobCreatedAt = fields.DateTime(allow_none=True, required=True)


class DailyMetricSchema(Schema):
    date = fields.String(required=True)
    total = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class MetricSchema(Schema):
    value = fields.Float(allow_none=True, required=True)
    data = fields.Raw(allow_none=True, required=True)
    recorded_at = fields.DateTime(required=True)


class StatsSchema(Schema):
    overview = fields.Nested(OverviewSchema, required=True)
    today = fields.Nested(TodaySchema, required=True)
    performance = fields.Nested(PerformanceSchema, required=True)
    dailyMetrics = fields.List(fields.Nested(DailyMetricSchema), required=True)
    resourceUtilization = fields.Dict(keys=fields.String(), values=fields.Nested(MetricSchema), required=True)
    computedAt = fields.DateTime(required=True, metadata={"description": "when these figures were computed"})
    computedBy = fields.Nested(ComputedBySchema, metadata={"description": "which process computed them, and why"})


class StatsEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(StatsSchema, required=True)


class AssessmentNamesSchema(Schema):
    names = fields.List(
        fields.String(), required=True, metadata={"description": "Distinct assessment names, ascending (at most 200)."}
    )


class AssessmentNamesEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(AssessmentNamesSchema, required=True)
