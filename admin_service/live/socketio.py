"""Socket.IO endpoint (path /admin/socket.io) for existing socket.io-client dashboards.

python-socketio handles the Engine.IO/Socket.IO protocols (gevent mode, WebSocket via
simple-websocket). Events come from the same per-process hub as SSE: the gateway holds
one hub subscription and fans out with Socket.IO rooms, so no socket adds database work.

Client -> server: subscribe:jobs [filter], unsubscribe:jobs, subscribe:alerts,
unsubscribe:alerts, request:job-stats. Server -> client: job-stats, job-update,
job-alert, error {message}.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

import socketio
from flask import Flask
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from admin_service import metrics
from admin_service.auth import AdminUser, Authenticator, AuthError, client_address
from admin_service.jobs.status import ALIASES, STATUSES
from admin_service.live.hub import EventFilter, LiveEvent
from admin_service.live.runtime import LiveRuntime
from admin_service.names import JOB_ALERT, JOB_STATS, JOB_UPDATE
from admin_service.services import services

log = logging.getLogger("admin_service.socketio")

PATH = "admin/socket.io"
JOBS_ROOM = "jobs"  # job-update (unfiltered) and job-stats
ALERTS_ROOM = "alerts"
UNAVAILABLE = "Service unavailable; retry shortly"
REFUSALS = {
    401: "Invalid or expired token",
    403: "Admin access required",
    429: "Too many failed authentication attempts; retry later",
}


def _filter_from(payload: Any) -> EventFilter | None:
    """An optional {status, assessment_name} filter; None when none given. Raises ValueError."""
    if payload is None or payload == {}:
        return None
    if not isinstance(payload, dict):
        raise ValueError("filter must be an object like {status: 'failed', assessment_name: 'IQ'}")
    unknown = set(payload) - {"status", "assessment_name"}
    if unknown:
        raise ValueError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
    statuses: set[str] = set()
    raw = payload.get("status")
    if raw is not None:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        for item in items:
            name = ALIASES.get(str(item).strip().lower(), str(item).strip().lower())
            if name not in STATUSES:
                raise ValueError(f"unknown status {item!r}")
            statuses.add(name)
    name = payload.get("assessment_name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 255):
        raise ValueError("assessment_name must be a string of 1-255 characters")
    return EventFilter(events=frozenset({JOB_UPDATE}), statuses=frozenset(statuses), assessment_name=name)


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * 2)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class GuardedServer(socketio.Server):
    """python-socketio's Server, answering a packet it cannot decode with an `error` event.

    Upstream lets the decoding error escape to engine.io, which logs a traceback for every such
    packet (any client could fill the log) and tells the client nothing. This overrides a
    private method of python-socketio 5.x (pinned in requirements.txt); tests/test_socketio.py
    notices if an upgrade stops calling it.
    """

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            super()._handle_eio_message(eio_sid, data)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # One line, no traceback: visible if it is ours after all, cheap if a client floods.
            log.warning("malformed Socket.IO packet (%s: %s)", type(exc).__name__, str(exc)[:200])
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None and self.manager.is_connected(sid, "/"):
                self.emit("error", {"message": "Malformed Socket.IO packet"}, to=sid)


class SocketGateway:
    def __init__(self, flask_app: Flask) -> None:
        used = services(flask_app)
        self.runtime: LiveRuntime = used.runtime
        self.auth: Authenticator = used.authenticator
        self.settings = self.runtime.settings
        self.sio = GuardedServer(
            async_mode="gevent",
            cors_allowed_origins=self._origin_allowed,
            max_http_buffer_size=64 * 1024,
            ping_interval=20,
            ping_timeout=20,
            logger=False,
            engineio_logger=False,
        )
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, Any]] = {}
        self._per_user: defaultdict[str, int] = defaultdict(int)
        self._filtered: dict[str, EventFilter] = {}  # sid -> filter, for filtered job subscriptions
        self._job_subscribers: set[str] = set()
        self.runtime.hub.demand.append(lambda name: name == JOB_STATS and bool(self._job_subscribers))
        self._register()
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.sio.start_background_task(self._pump)
        self.sio.start_background_task(self._expire_tokens)

    def _pump(self) -> None:
        """Forward hub events to rooms. One hub subscription for all sockets of this process."""
        sub = self.runtime.hub.subscribe(EventFilter(), queue_max=100_000)
        sub.counts_for_demand = False
        while not self.runtime.stop.is_set():
            event = sub.get(1.0)
            if event is None:
                continue
            if event.name == "stop":
                self.sio.emit("error", {"message": "Server shutting down; reconnect"})
                return
            try:
                self._dispatch(event)
            except Exception:  # one bad event must not end delivery for everyone
                log.exception("socket.io dispatch failed")

    def _dispatch(self, event: LiveEvent) -> None:
        data = event.data
        if event.name == JOB_UPDATE:
            self.sio.emit(JOB_UPDATE, data, to=JOBS_ROOM)
            for sid, sub_filter in list(self._filtered.items()):
                if sub_filter.accepts(event):
                    self.sio.emit(JOB_UPDATE, data, to=sid)
        elif event.name == JOB_ALERT:
            self.sio.emit(JOB_ALERT, data, to=ALERTS_ROOM)
        elif event.name == JOB_STATS:
            payload = event.json_ready()
            self.sio.emit(JOB_STATS, payload, to=JOBS_ROOM)
            for sid in list(self._filtered):
                self.sio.emit(JOB_STATS, payload, to=sid)

    def _expire_tokens(self) -> None:
        while not self.runtime.stop.is_set():
            self.sio.sleep(1)
            now = time.time()
            for sid, session in list(self._sessions.items()):
                expires = session["admin"].expires_at
                if expires is not None and expires <= now:
                    self.sio.emit("error", {"message": "Token expired", "code": "TOKEN_EXPIRED"}, to=sid)
                    self.sio.disconnect(sid)

    # -- handlers ----------------------------------------------------------------------
    def _register(self) -> None:
        sio = self.sio

        @sio.event
        def connect(sid: str, environ: Any = None, auth: Any = None, *_: Any) -> None:
            # (Defaults and *_: a faked "connect" event may carry any arguments.)
            if self._faked_lifecycle_event(sid, "connect"):
                return
            token = auth.get("token") if isinstance(auth, dict) else None
            if not token:
                # Old clients pass ?token=... in the handshake URL.
                token = (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [None])[0]
            if not token or not isinstance(token, str):
                raise socketio.exceptions.ConnectionRefusedError("Authentication required")
            try:
                admin = self.auth.authenticate(token, client_address(environ or {}, self.settings.trust_proxy))
            except AuthError as exc:
                raise socketio.exceptions.ConnectionRefusedError(REFUSALS.get(exc.status, UNAVAILABLE)) from None
            except (DBAPIError, PoolTimeoutError) as exc:
                # The user lookup failed: refuse with a reason instead of leaving the client
                # waiting for an answer that never comes.
                log.warning("socket.io connect: user lookup failed: %s", type(exc).__name__)
                raise socketio.exceptions.ConnectionRefusedError(UNAVAILABLE) from None
            with self._lock:
                if self._per_user[admin.id] >= self.settings.socketio_max_connections_per_user:
                    raise socketio.exceptions.ConnectionRefusedError("Too many connections for this user")
                self._per_user[admin.id] += 1
                self._sessions[sid] = {"admin": admin, "bucket": TokenBucket(self.settings.socketio_events_per_second)}
                metrics.SOCKETIO_CLIENTS.set(len(self._sessions))
            self.start()
            # After this handler returns, i.e. after the CONNECT packet: no event may precede it.
            self.sio.start_background_task(self._send_stats, sid)

        @sio.event
        def disconnect(sid: str, *args: Any) -> None:
            if self._faked_lifecycle_event(sid, "disconnect"):
                return
            with self._lock:
                session = self._sessions.pop(sid, None)
                metrics.SOCKETIO_CLIENTS.set(len(self._sessions))
                if session is not None:
                    admin: AdminUser = session["admin"]
                    self._per_user[admin.id] -= 1
                    if self._per_user[admin.id] <= 0:
                        del self._per_user[admin.id]
            self._filtered.pop(sid, None)
            self._job_subscribers.discard(sid)

        @sio.on("subscribe:jobs")
        def subscribe_jobs(sid: str, *args: Any) -> dict[str, Any]:
            if not self._allowed(sid):
                return {"ok": False, "error": "Rate limit exceeded"}
            try:
                # Any argument count must reach here: a signature mismatch would raise before
                # the handler ran, and the client would get neither an ack nor an error.
                if len(args) > 1:
                    raise ValueError("takes one argument, a filter object")
                sub_filter = _filter_from(args[0] if args else None)
            except ValueError as exc:
                self.sio.emit("error", {"message": f"subscribe:jobs: {exc}"}, to=sid)
                return {"ok": False, "error": str(exc)}
            self.sio.leave_room(sid, JOBS_ROOM)
            self._filtered.pop(sid, None)
            if sub_filter is None:
                self.sio.enter_room(sid, JOBS_ROOM)
            else:
                self._filtered[sid] = sub_filter
            self._job_subscribers.add(sid)
            return {"ok": True}

        @sio.on("unsubscribe:jobs")
        def unsubscribe_jobs(sid: str, *args: Any) -> dict[str, Any]:
            if not self._allowed(sid):
                return {"ok": False, "error": "Rate limit exceeded"}
            self.sio.leave_room(sid, JOBS_ROOM)
            self._filtered.pop(sid, None)
            self._job_subscribers.discard(sid)
            return {"ok": True}

        @sio.on("subscribe:alerts")
        def subscribe_alerts(sid: str, *args: Any) -> dict[str, Any]:
            if not self._allowed(sid):
                return {"ok": False, "error": "Rate limit exceeded"}
            self.sio.enter_room(sid, ALERTS_ROOM)
            return {"ok": True}

        @sio.on("unsubscribe:alerts")
        def unsubscribe_alerts(sid: str, *args: Any) -> dict[str, Any]:
            if not self._allowed(sid):
                return {"ok": False, "error": "Rate limit exceeded"}
            self.sio.leave_room(sid, ALERTS_ROOM)
            return {"ok": True}

        @sio.on("request:job-stats")
        def request_stats(sid: str, *args: Any) -> dict[str, Any] | None:
            if not self._allowed(sid):
                return None
            return self._send_stats(sid)

        @sio.on("*")
        def unknown(event: str, sid: str, *args: Any) -> None:
            if self._allowed(sid):
                self.sio.emit("error", {"message": f"Unknown event {str(event)[:64]!r}"}, to=sid)

    def _faked_lifecycle_event(self, sid: str, name: str) -> bool:
        """True (and an `error` to the client) when a client EVENT named "connect" or
        "disconnect" reached that handler: python-socketio dispatches them by name. A fake
        "disconnect" would otherwise free the socket from token expiry and the per-user limit.
        During a real connect or disconnect the session is pending, so not `is_connected`."""
        if not self.sio.manager.is_connected(sid, "/"):
            return False
        if self._allowed(sid):
            self.sio.emit("error", {"message": f"{name!r} is a reserved event name"}, to=sid)
        return True

    def _origin_allowed(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """ALLOWED_ORIGINS, plus this service's own origin (its dashboard page)."""
        origins = self.settings.allowed_origins
        if origin is None or "*" in origins or origin in origins:
            return True
        return origin == f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"

    def _allowed(self, sid: str) -> bool:
        session = self._sessions.get(sid)
        if session is None:
            return False
        if session["bucket"].take():
            return True
        self.sio.emit("error", {"message": "Rate limit exceeded: slow down"}, to=sid)
        return False

    def _send_stats(self, sid: str) -> dict[str, Any] | None:
        try:
            data, _ = self.runtime.stats.get()
        except Exception:
            self.sio.emit("error", {"message": "Statistics unavailable; retry shortly"}, to=sid)
            return None
        payload = LiveEvent(JOB_STATS, data).json_ready()
        self.sio.emit(JOB_STATS, payload, to=sid)
        return payload


def mount_socketio(flask_app: Flask) -> socketio.WSGIApp:
    """The WSGI app gunicorn serves: Socket.IO at /admin/socket.io, Flask for the rest."""
    gateway = SocketGateway(flask_app)
    flask_app.extensions["admin_service.socketio"] = gateway
    wsgi = socketio.WSGIApp(gateway.sio, flask_app, socketio_path=PATH)
    wsgi.flask_app = flask_app  # type: ignore[attr-defined]
    return wsgi
