"""GET /admin/jobs/stream: Server-Sent Events for browsers' EventSource and any HTTP client.

On connect: `retry:`, then job-stats at once, then any stored events after Last-Event-ID
(header, or `last_event_id` for clients that cannot set headers) replayed in order, then
live events. Stored events carry `id:` = log id; heartbeat comments keep proxies and
dead-client detection honest. The stream ends when the token expires, when the client is
too slow (a final `error` event), or on shutdown (with a short retry hint).

This module is the HTTP side (the query, the opening, the replay); live/stream.py is the
stream itself and its two writers.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Response, g, request
from marshmallow import ValidationError, fields, post_load, validate

from admin_service.api import ApiBlueprint
from admin_service.auth import request_token, require_admin
from admin_service.db.dbapi import Cursor
from admin_service.errors import ApiError
from admin_service.jobs.schemas import DocumentedField, StatusListField, StrictQuerySchema, comma_list, storable_text
from admin_service.live.caps import SSE, Place
from admin_service.live.hub import CloseReason, EventFilter
from admin_service.live.log import EventLog
from admin_service.live.revocation import OpenConnection
from admin_service.live.runtime import LiveRuntime
from admin_service.live.stream import SseStream, id_line, message, open_stream, opening_line, sse_message
from admin_service.names import EVENT_NAMES, JOB_STATS
from admin_service.services import services

blp = ApiBlueprint("live", __name__, url_prefix="/admin/jobs", description="Live job events (Server-Sent Events).")

REPLAY_PAGE = 500
# Beyond this many missed events a client is better served by refetching (a `reset`).
REPLAY_MAX = 50_000


class EventsField(DocumentedField):
    openapi = {"type": "string", "pattern": comma_list(EVENT_NAMES)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> frozenset[str]:
        names = frozenset(part.strip() for part in str(value).split(",") if part.strip())
        unknown = names - set(EVENT_NAMES)
        if not names or unknown:
            raise ValidationError(f"Use a comma-separated list of {', '.join(EVENT_NAMES)}.")
        return names


# job_events.id is a bigserial.
MAX_EVENT_ID = 2**63 - 1
EVENT_ID_RULE = f"a log id, a whole number from 0 to {MAX_EVENT_ID}"


def parse_event_id(text: str) -> int:
    """A log id as a client sends it (Last-Event-ID, last_event_id); ValueError otherwise. ASCII
    digits only: str.isdigit() also takes "²" and other digits int() refuses, and int() itself
    refuses more than 4,300 digits; neither may reach the view as anything but a 400."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_EVENT_ID))) or int(text) > MAX_EVENT_ID:
        raise ValueError(f"must be {EVENT_ID_RULE}")
    return int(text)


class EventIdField(DocumentedField):
    openapi = {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_event_id(str(value))
        except ValueError:
            raise ValidationError(f"Must be {EVENT_ID_RULE}.") from None


class StreamQuerySchema(StrictQuerySchema):
    events = EventsField(metadata={"description": "Event names to receive (default: all)."})
    status = StatusListField(metadata={"description": "Only job-update events of these statuses."})
    assessment_name = fields.String(validate=[validate.Length(min=1, max=255), storable_text])
    user_id = fields.UUID()
    last_event_id = EventIdField(metadata={"description": "Resume after this log id (Last-Event-ID, when sent, wins)."})
    access_token = fields.String(
        metadata={"description": "The admin token, for EventSource (which cannot send headers). Never logged."}
    )

    @post_load
    def _header_id(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """EventSource resumes with the Last-Event-ID header: it wins over the query parameter."""
        header = request.headers.get("Last-Event-ID")
        if header is not None and header.strip():
            try:
                data["last_event_id"] = parse_event_id(header)
            except ValueError:
                raise ValidationError(f"Last-Event-ID must be {EVENT_ID_RULE}.", field_name="Last-Event-ID") from None
        return data


def _replay(event_log: EventLog, after: int, sub_filter: EventFilter) -> tuple[list[bytes], int, bool]:
    """Stored events after `after`, as SSE messages; (messages, newest id, reset needed)."""
    raw = services().engine.raw_connection()
    try:
        # The pool's psycopg2 connection: its cursor fits the Protocol.
        cur = cast(Cursor, raw.cursor())
        pruned, logged = event_log.replay_bounds(cur)
        # An id beyond anything logged is not from this log (recreated, restored, another
        # environment): following from it would silently skip every event up to it.
        if after < pruned or after > max(pruned, logged):
            return [], after, True
        messages: list[bytes] = []
        newest = after
        total = 0
        while True:
            events = event_log.read_after(cur, newest, REPLAY_PAGE)
            for event in events:
                if sub_filter.accepts(event):
                    messages.append(sse_message(event))
                newest = event.id or newest
            total += len(events)
            if len(events) < REPLAY_PAGE:
                return messages, newest, False
            if total >= REPLAY_MAX:
                return [], newest, True
    finally:
        raw.close()


# A refused stream may retry this much later (a place frees when one of the user's streams closes).
RETRY_AFTER_CAP_S = 5


def _closed(runtime: LiveRuntime, sse: SseStream, watched: OpenConnection, place: Place) -> None:
    runtime.hub.unsubscribe(sse)
    runtime.connections.discard(watched)
    runtime.caps.release(place)


@blp.route("/stream")
@blp.arguments(StreamQuerySchema, location="query")
@blp.response(200, content_type="text/event-stream", description="An endless text/event-stream.")
@blp.errors(400, 401, 403, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def stream(args: dict[str, Any]) -> Response:
    """Live job events (SSE)

    At most SSE_MAX_STREAMS_PER_USER open streams per user across the deployment (429 beyond);
    a stream ends with an `error` event ACCESS_REVOKED when its user is deactivated.

    Events: job-stats (at once, then every JOB_STATS_INTERVAL_MS), job-update and job-alert
    (with `id:` = event log id). Resume with Last-Event-ID (or last_event_id); a `reset`
    event means the gap is older than what is kept: refetch, then follow.
    """
    admin = g.admin
    used = services()
    settings, runtime = used.settings, used.runtime
    runtime.start()  # no-op under gunicorn (started at worker boot); starts the tail elsewhere
    last_id = args.get("last_event_id")
    sub_filter = EventFilter(
        events=args.get("events") or frozenset(EVENT_NAMES),
        statuses=frozenset(args.get("status") or ()),
        assessment_name=args.get("assessment_name"),
        user_id=str(args["user_id"]) if args.get("user_id") else None,
    )
    # The user's place among SSE_MAX_STREAMS_PER_USER across every worker, taken before anything
    # is subscribed, freed when the response closes (always called, started or not).
    admitted, place = runtime.caps.admit(SSE, admin.id, settings.sse_max_streams_per_user)
    if not admitted:
        raise ApiError(
            429,
            f"Too many open streams for this user (at most {settings.sse_max_streams_per_user}); close one first",
            headers={"Retry-After": str(RETRY_AFTER_CAP_S)},
        )
    try:
        sse = open_stream(runtime.hub, sub_filter, request.environ)
    except BaseException:
        runtime.caps.release(place)
        raise
    try:
        opening = [opening_line(settings.sse_retry_ms)]
        if JOB_STATS in sub_filter.events:
            data, _ = used.stats.get()
            opening.append(message(JOB_STATS, data))
        newest = runtime.tail.position
        if last_id is not None:
            replayed, newest, reset = _replay(runtime.event_log, last_id, sub_filter)
            if reset:
                newest = runtime.tail.position
                opening.append(message("reset", {"reason": "events after this id were pruned; refetch", "lastEventId": newest}))
            opening.extend(replayed)
        if newest > 0:
            # An id without data sets EventSource's lastEventId: a client dropped before its
            # first stored event still resumes from here instead of refetching everything.
            opening.append(id_line(newest))
    except BaseException:
        runtime.hub.unsubscribe(sse)
        runtime.caps.release(place)
        raise
    # Re-checked with its user every AUTH_CACHE_SECONDS: a deactivated admin's stream ends.
    watched = runtime.connections.add(request_token(allow_query=True), admin.expires_at, lambda _: sse.close(CloseReason.REVOKED))
    body = sse.body(
        b"".join(opening),
        newest,
        expires_at=admin.expires_at,
        heartbeat_s=settings.sse_heartbeat_s,
        retry_ms=settings.sse_retry_ms,
    )
    response = Response(body, mimetype="text/event-stream")
    # The body's own clean-up runs only once it has started; a response closed before that (a
    # HEAD request, a client gone before the first byte) would leave the subscriber behind.
    # close() is what every WSGI server calls on every response, started or not.
    response.call_on_close(lambda: _closed(runtime, sse, watched, place))
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


@blp.before_request
def _authenticate() -> None:
    require_admin(allow_query_token=True)
