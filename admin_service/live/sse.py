"""GET /admin/jobs/stream: Server-Sent Events for browsers' EventSource and any HTTP client.

On connect: `retry:`, then job-stats at once, then any stored events after Last-Event-ID
(header, or `last_event_id` for clients that cannot set headers) replayed in order, then
live events. Stored events carry `id:` = log id; heartbeat comments keep proxies and
dead-client detection honest. The stream ends when the token expires, when the client is
too slow (a final `error` event), or on shutdown (with a short retry hint).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any, cast

from flask import Response, g, request
from marshmallow import ValidationError, fields, validate, validates_schema

from admin_service import metrics
from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.db.dbapi import Cursor
from admin_service.jobs.schemas import DocumentedField, StatusListField, StrictQuerySchema, comma_list
from admin_service.live.hub import STOP, EventFilter, Hub, LiveEvent, Subscriber
from admin_service.live.log import EventLog
from admin_service.live.sse_socket import SocketStream, follow_on_socket, until_next_beat
from admin_service.names import EVENT_NAMES, JOB_STATS
from admin_service.services import services

blp = ApiBlueprint("live", __name__, url_prefix="/admin/jobs", description="Live job events (Server-Sent Events).")

REPLAY_PAGE = 500
# Beyond this many missed events a client is better served by refetching (a `reset`).
REPLAY_MAX = 50_000
# A dropped slow subscriber gets this long to take its `error` event and end by itself.
SLOW_CONSUMER_GRACE_S = 2.0
# At most this many queued events are joined into one write.
MAX_BATCH = 200


class EventsField(DocumentedField):
    openapi = {"type": "string", "pattern": comma_list(EVENT_NAMES)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> frozenset[str]:
        names = frozenset(part.strip() for part in str(value).split(",") if part.strip())
        unknown = names - set(EVENT_NAMES)
        if not names or unknown:
            raise ValidationError(f"Use a comma-separated list of {', '.join(EVENT_NAMES)}.")
        return names


class StreamQuerySchema(StrictQuerySchema):
    events = EventsField(metadata={"description": "Event names to receive (default: all)."})
    status = StatusListField(metadata={"description": "Only job-update events of these statuses."})
    assessment_name = fields.String(validate=validate.Length(min=1, max=255))
    user_id = fields.UUID()
    last_event_id = fields.Integer(validate=validate.Range(min=0), metadata={"description": "Resume after this log id."})
    access_token = fields.String(
        metadata={"description": "The admin token, for EventSource (which cannot send headers). Never logged."}
    )

    @validates_schema
    def _header_id(self, data: dict[str, Any], **kwargs: Any) -> None:
        header = request.headers.get("Last-Event-ID")
        if header is not None and header.strip() and not header.strip().isdigit():
            raise ValidationError("Last-Event-ID must be a log id (a whole number).", field_name="Last-Event-ID")


def message(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    return LiveEvent(name, data, event_id).sse_bytes


def _replay(event_log: EventLog, after: int, sub_filter: EventFilter) -> tuple[list[bytes], int, bool]:
    """Stored events after `after`, as SSE text; (chunks, newest id, reset needed)."""
    raw = services().engine.raw_connection()
    try:
        # The pool's psycopg2 connection: its cursor fits the Protocol.
        cur = cast(Cursor, raw.cursor())
        pruned, logged = event_log.replay_bounds(cur)
        # An id beyond anything logged is not from this log (recreated, restored, another
        # environment): following from it would silently skip every event up to it.
        if after < pruned or after > max(pruned, logged):
            return [], after, True
        chunks: list[bytes] = []
        newest = after
        total = 0
        while True:
            events = event_log.read_after(cur, newest, REPLAY_PAGE)
            for event in events:
                if sub_filter.accepts(event):
                    chunks.append(event.sse_bytes)
                newest = event.id or newest
            total += len(events)
            if len(events) < REPLAY_PAGE:
                return chunks, newest, False
            if total >= REPLAY_MAX:
                return [], newest, True
    finally:
        raw.close()


@blp.route("/stream")
@blp.arguments(StreamQuerySchema, location="query")
@blp.response(200, content_type="text/event-stream", description="An endless text/event-stream.")
@blp.errors(400, 401, 403, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def stream(args: dict[str, Any]) -> Response:
    """Live job events (SSE)

    Events: job-stats (at once, then every JOB_STATS_INTERVAL_MS), job-update and job-alert
    (with `id:` = event log id). Resume with Last-Event-ID (or last_event_id); a `reset`
    event means the gap is older than what is kept: refetch, then follow.
    """
    admin = g.admin
    used = services()
    settings, runtime = used.settings, used.runtime
    runtime.start()  # no-op under gunicorn (started at worker boot); starts the tail elsewhere
    header_id = (request.headers.get("Last-Event-ID") or "").strip()
    last_id = int(header_id) if header_id else args.get("last_event_id")
    sub_filter = EventFilter(
        events=args.get("events") or frozenset(EVENT_NAMES),
        statuses=frozenset(args.get("status") or ()),
        assessment_name=args.get("assessment_name"),
        user_id=str(args["user_id"]) if args.get("user_id") else None,
    )
    client_socket = request.environ.get("gunicorn.socket")
    # Under gunicorn, with HTTP/1.1 chunked coding for the body, the publisher writes to the
    # socket itself (live/sse_socket.py); elsewhere (tests' client, dev server) the body is
    # yielded event by event.
    # gunicorn serving TLS itself hands over a TLS socket: its bytes must go through the TLS
    # layer, never straight to the descriptor.
    direct = (
        client_socket is not None
        and not hasattr(client_socket, "getpeercert")
        and request.method == "GET"
        and request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
    )
    # Subscribe before reading the log: events arriving meanwhile wait in the queue.
    sub: Subscriber = (
        runtime.hub.attach(SocketStream(sub_filter, runtime.hub.queue_max)) if direct else runtime.hub.subscribe(sub_filter)
    )
    finished = threading.Event()
    if client_socket is not None:
        sub.on_close = _cut_off_if_stuck(client_socket, finished)
    try:
        opening = [f"retry: {settings.sse_retry_ms}\n: connected\n\n".encode()]
        if JOB_STATS in sub_filter.events:
            data, _ = used.stats.get()
            opening.append(message(JOB_STATS, data))
        newest = runtime.tail.position
        if last_id is not None:
            chunks, newest, reset = _replay(runtime.event_log, last_id, sub_filter)
            if reset:
                newest = runtime.tail.position
                opening.append(message("reset", {"reason": "events after this id were pruned; refetch", "lastEventId": newest}))
            opening.extend(chunks)
        if newest > 0:
            # An id without data sets EventSource's lastEventId: a client dropped before its
            # first stored event still resumes from here instead of refetching everything.
            opening.append(f"id: {newest}\n\n".encode())
    except BaseException:
        runtime.hub.unsubscribe(sub)
        raise
    ending = _endings(settings.sse_retry_ms)
    if isinstance(sub, SocketStream):
        body = follow_on_socket(
            runtime.hub,
            sub,
            client_socket,
            b"".join(opening),
            newest,
            admin.expires_at,
            settings.sse_heartbeat_s,
            ending,
            finished,
        )
    else:
        body = _follow(runtime.hub, sub, opening, newest, admin.expires_at, settings.sse_heartbeat_s, ending, finished)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def _cut_off_if_stuck(client_socket: socket.socket, finished: threading.Event) -> Callable[[Subscriber], None]:
    """on_close for a stream: a client that stopped reading leaves the stream blocked in a
    socket write that has no timeout, so it would never see its STOP; after a grace period
    shut the socket down, which fails that write and ends the request."""

    def cut() -> None:
        if finished.is_set():
            return
        # Through a duplicate: shutting the original down under gevent cancels the blocked
        # write with EBADF, which gunicorn logs as an error; this way it fails with EPIPE.
        with suppress(OSError), socket.fromfd(client_socket.fileno(), client_socket.family, client_socket.type) as dup:
            dup.shutdown(socket.SHUT_RDWR)

    def on_close(sub: Subscriber) -> None:
        if sub.closed_reason == "slow-consumer":
            timer = threading.Timer(SLOW_CONSUMER_GRACE_S, cut)
            timer.daemon = True
            timer.start()

    return on_close


def _endings(retry_ms: int) -> dict[str, bytes]:
    """The last message of a stream, by why it ends."""
    return {
        "expired": message("error", {"code": "TOKEN_EXPIRED", "message": "Token expired; reconnect with a new token"}),
        "slow-consumer": message(
            "error", {"code": "SLOW_CONSUMER", "message": "Too slow to keep up; reconnect with Last-Event-ID"}
        ),
        "shutdown": f"retry: {min(retry_ms, 1000)}\n: server shutting down, reconnect\n\n".encode(),
    }


def _follow(
    hub: Hub,
    sub: Subscriber,
    opening: list[bytes],
    newest: int,
    expires_at: float | None,
    heartbeat_s: float,
    ending: dict[str, bytes],
    finished: threading.Event,
) -> Iterator[bytes]:
    # Runs after the view returned: no request or app context here.
    metrics.SSE_CLIENTS.inc()
    try:
        yield b"".join(opening)
        while True:
            timeout = until_next_beat(expires_at, heartbeat_s)
            if timeout <= 0:
                yield ending["expired"]
                return
            event = sub.get(timeout)
            if event is None:
                yield f": heartbeat {int(time.time())}\n\n".encode()
                continue
            # Everything already queued goes out in one write: a burst costs one send per
            # client, not one per event.
            chunks: list[bytes] = []
            while event is not None:
                if event.name == "stop":
                    if chunks:
                        yield b"".join(chunks)
                    yield ending["slow-consumer" if sub.closed_reason == "slow-consumer" else "shutdown"]
                    return
                if event.id is None or event.id > newest:  # ids up to `newest` were replayed
                    newest = event.id or newest
                    chunks.append(event.sse_bytes)
                event = sub.get_nowait() if len(chunks) < MAX_BATCH else None
                if event is None and sub.closed_reason is not None:
                    event = STOP
            if chunks:
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        metrics.SSE_CLIENTS.dec()
        finished.set()
        hub.unsubscribe(sub)


@blp.before_request
def _authenticate() -> None:
    require_admin(allow_query_token=True)
