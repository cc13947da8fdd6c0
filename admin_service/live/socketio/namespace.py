"""The application's side of Socket.IO: the default namespace's handlers, one method per event.

Every client event passes `trigger_event` first: the socket must hold a session (it was
authenticated at connect) and its rate budget, whatever the event. python-socketio would map an
event to `on_<name>`; the table below does, because the contract's names hold ':' and '-'.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import socketio  # type: ignore[import-untyped, unused-ignore]  # no stubs
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from admin_service import metrics
from admin_service.auth import AdminUser, Authenticator, AuthError, client_address
from admin_service.live.caps import SOCKETIO, Place
from admin_service.live.hub import LiveEvent
from admin_service.live.revocation import OpenConnection
from admin_service.live.runtime import LiveRuntime
from admin_service.live.socketio.filters import ALERTS_ROOM, JobRooms, filter_from
from admin_service.live.socketio.limits import TokenBucket
from admin_service.live.socketio.relay import Relay
from admin_service.live.socketio.server import GuardedServer
from admin_service.names import JOB_STATS

log = logging.getLogger("admin_service.socketio")

UNAVAILABLE = "Service unavailable; retry shortly"
REFUSALS = {
    401: "Invalid or expired token",
    403: "Admin access required",
    429: "Too many failed authentication attempts; retry later",
}
# Client event -> handler. Any other name is answered with an `error` event.
CLIENT_EVENTS = {
    "subscribe:jobs": "on_subscribe_jobs",
    "unsubscribe:jobs": "on_unsubscribe_jobs",
    "subscribe:alerts": "on_subscribe_alerts",
    "unsubscribe:alerts": "on_unsubscribe_alerts",
    "request:job-stats": "on_request_job_stats",
}
# What a subscription event acknowledges when refused for its rate (request:job-stats, nothing).
SUBSCRIPTIONS = frozenset(name for name in CLIENT_EVENTS if name != "request:job-stats")
RATE_LIMITED = {"ok": False, "error": "Rate limit exceeded"}
OK = {"ok": True}
LIFECYCLE = ("connect", "disconnect")
AUTH_FAILURES = (AuthError, DBAPIError, PoolTimeoutError)


def refusal_for(exc: Exception) -> str:
    """What a refused connect tells the client about an authentication failure."""
    if isinstance(exc, AuthError):
        return REFUSALS.get(exc.status, UNAVAILABLE)
    # The user lookup failed: refuse with a reason instead of leaving the client waiting.
    log.warning("socket.io connect: user lookup failed: %s", type(exc).__name__)
    return UNAVAILABLE


def token_from(environ: dict[str, Any], auth: Any) -> str | None:
    """The handshake's auth {token}, else ?token=... in its URL (old clients)."""
    token = auth.get("token") if isinstance(auth, dict) else None
    if not token:
        token = (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [None])[0]
    return token if token and isinstance(token, str) else None


@dataclass
class Session:
    admin: AdminUser
    bucket: TokenBucket
    place: Place  # its place among the user's SOCKETIO_MAX_CONNECTIONS_PER_USER (live/caps.py)
    watched: OpenConnection  # re-checked with its user (live/revocation.py)


class JobsNamespace(socketio.Namespace):  # type: ignore[misc]  # python-socketio is untyped
    server: GuardedServer  # set by GuardedServer.register_namespace

    def __init__(self, runtime: LiveRuntime, authenticator: Authenticator, rooms: JobRooms, relay: Relay) -> None:
        super().__init__("/")
        self.runtime = runtime
        self.auth = authenticator
        self.settings = runtime.settings
        self.rooms = rooms
        self.relay = relay
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """The background loops, once, in the worker (so: at the first connect, after the fork)."""
        if self._started:
            return
        self._started = True
        self.relay.start()
        self.server.start_background_task(self._expire_tokens)

    # -- dispatch ------------------------------------------------------------------------
    def trigger_event(self, event: Any, sid: str, *args: Any) -> Any:
        event = str(event)  # a packet may name its event with any JSON value
        if event in LIFECYCLE:
            # During a real connect or disconnect the socket is pending, so not `is_connected`;
            # a connected socket sending these names is faking one (python-socketio would pass
            # it to the handler): a fake "disconnect" would free it from token expiry and the
            # per-user limit.
            if not self.server.manager.is_connected(sid, self.namespace):
                return super().trigger_event(event, sid, *args)
            if self._allowed(sid):
                self._error(sid, f"{event!r} is a reserved event name")
            return None
        if not self._allowed(sid):
            return RATE_LIMITED if event in SUBSCRIPTIONS else None
        handler = CLIENT_EVENTS.get(event)
        if handler is None:
            self._error(sid, f"Unknown event {event[:64]!r}")
            return None
        return getattr(self, handler)(sid, *args)

    def _allowed(self, sid: str) -> bool:
        """The socket has a session and its rate budget allows one more event."""
        session = self._sessions.get(sid)
        if session is None:
            return False
        if session.bucket.take():
            return True
        self._error(sid, "Rate limit exceeded: slow down")
        return False

    # -- lifecycle -----------------------------------------------------------------------
    def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = token_from(environ, auth)
        if token is None:
            raise socketio.exceptions.ConnectionRefusedError("Authentication required")
        try:
            admin = self.auth.authenticate(token, client_address(environ, self.settings.trust_proxy))
        except AUTH_FAILURES as exc:
            raise socketio.exceptions.ConnectionRefusedError(refusal_for(exc)) from None
        except Exception:
            # Anything else escaping here leaves the client without any answer to its CONNECT.
            log.exception("socket.io connect: authentication failed unexpectedly")
            raise socketio.exceptions.ConnectionRefusedError(UNAVAILABLE) from None
        # Counted across every worker and instance, not per worker.
        cap = self.settings.socketio_max_connections_per_user
        admitted, place = self.runtime.caps.admit(SOCKETIO, admin.id, cap)
        if not admitted:
            raise socketio.exceptions.ConnectionRefusedError("Too many connections for this user")
        watched = self.runtime.connections.add(token, admin.expires_at, lambda reason: self._revoke(sid, reason))
        with self._sessions_lock:
            self._sessions[sid] = Session(admin, TokenBucket(self.settings.socketio_events_per_second), place, watched)
            metrics.SOCKETIO_CLIENTS.set(len(self._sessions))
        self.start()
        # After this handler returns, i.e. after the CONNECT packet: no event may precede it.
        self.server.start_background_task(self._send_stats, sid)

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        with self._sessions_lock:
            session = self._sessions.pop(sid, None)
            metrics.SOCKETIO_CLIENTS.set(len(self._sessions))
        if session is not None:
            self.runtime.connections.discard(session.watched)
            self.runtime.caps.release(session.place)
        # python-socketio empties the socket's rooms itself; the filters behind them are ours.
        if self.rooms.leave(sid) is not None:
            self.relay.rooms_changed()

    def _expire_tokens(self) -> None:
        while not self.runtime.stop.is_set():
            self.server.sleep(1)
            now = time.time()
            for sid, session in list(self._sessions.items()):
                expires = session.admin.expires_at
                if expires is not None and expires <= now:
                    self.emit("error", {"message": "Token expired", "code": "TOKEN_EXPIRED"}, to=sid)
                    self.server.disconnect(sid)

    def _revoke(self, sid: str, reason: str) -> None:
        """The socket's user is no longer an active admin (called by the re-check's loop)."""
        self.emit("error", {"message": reason, "code": "ACCESS_REVOKED"}, to=sid)
        self.server.disconnect(sid)

    # -- client events -------------------------------------------------------------------
    def on_subscribe_jobs(self, sid: str, *args: Any) -> dict[str, Any]:
        # Any argument count reaches here (python-socketio would raise on a signature mismatch
        # and the client would get neither an ack nor an error).
        try:
            if len(args) > 1:
                raise ValueError("takes one argument, a filter object")
            sub_filter = filter_from(args[0] if args else None)
        except ValueError as exc:
            self._error(sid, f"subscribe:jobs: {exc}")
            return {"ok": False, "error": str(exc)}
        left, entered = self.rooms.join(sid, sub_filter)
        if left is not None:
            self.leave_room(sid, left)
        self.enter_room(sid, entered)
        self.relay.rooms_changed()
        return OK

    def on_unsubscribe_jobs(self, sid: str, *_: Any) -> dict[str, Any]:
        left = self.rooms.leave(sid)
        if left is not None:
            self.leave_room(sid, left)
            self.relay.rooms_changed()
        return OK

    def on_subscribe_alerts(self, sid: str, *_: Any) -> dict[str, Any]:
        self.enter_room(sid, ALERTS_ROOM)
        return OK

    def on_unsubscribe_alerts(self, sid: str, *_: Any) -> dict[str, Any]:
        self.leave_room(sid, ALERTS_ROOM)
        return OK

    def on_request_job_stats(self, sid: str, *_: Any) -> dict[str, Any] | None:
        return self._send_stats(sid)

    # -- to one socket -------------------------------------------------------------------
    def _error(self, sid: str, message: str) -> None:
        self.emit("error", {"message": message}, to=sid)

    def _send_stats(self, sid: str) -> dict[str, Any] | None:
        try:
            data, _ = self.runtime.stats.get()
        except Exception:
            self._error(sid, "Statistics unavailable; retry shortly")
            return None
        payload = LiveEvent(JOB_STATS, data).json_ready()
        self.emit(JOB_STATS, payload, to=sid)
        return payload
