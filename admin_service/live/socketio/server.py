"""The Socket.IO server: python-socketio in gevent mode, with this service's transport settings."""

from __future__ import annotations

import logging
from typing import Any

import engineio  # type: ignore[import-untyped, unused-ignore]  # no stubs; kept narrow by this module
import engineio.socket  # type: ignore[import-untyped, unused-ignore]
import orjson
import socketio  # type: ignore[import-untyped, unused-ignore]

from admin_service import metrics
from admin_service.auth import client_address
from admin_service.config import Settings
from admin_service.errors import error_body
from admin_service.live.socketio.handshakes import HandshakeGuard, Refusal

log = logging.getLogger("admin_service.socketio")

NAMESPACE = "/"
# The WebSocket handshake's extension offers, as WSGI names the request header.
WS_EXTENSIONS = "HTTP_SEC_WEBSOCKET_EXTENSIONS"
REASONS = {429: "TOO MANY REQUESTS", 503: "SERVICE UNAVAILABLE"}


class GuardedEngineIO(engineio.Server):  # type: ignore[misc]  # python-engineio is untyped
    """Engine.IO's server, asking the handshake guard before it opens a session, and keeping
    the background tasks of the sessions still waiting to authenticate (their ping timer, which
    sleeps ping_interval holding the session): a dropped session's are ended with it. Its
    session ids start with the worker's tag (sid_prefix: affinity.py)."""

    guard: HandshakeGuard
    trust_proxy: bool
    sid_prefix = ""

    def generate_id(self) -> str:
        return self.sid_prefix + str(super().generate_id())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_tasks: dict[str, list[Any]] = {}

    def handle_request(self, environ: dict[str, Any], start_response: Any) -> Any:
        # No permessage-deflate on WebSockets (simple-websocket accepts any client's offer, and
        # browsers and socket.io-client offer it): each socket then deflates every broadcast
        # itself, with a compressor of its own (~256 KiB). With 1,000 sockets that was 40 % of
        # the worker's CPU, and half of an update's fan-out time. Socket.IO's own server leaves
        # it off by default (perMessageDeflate: false); the events are small JSON.
        environ.pop(WS_EXTENSIONS, None)
        return super().handle_request(environ, start_response)

    def _handle_connect(self, environ: dict[str, Any], start_response: Any, transport: str, jsonp_index: Any = None) -> Any:
        refusal = self.guard.admit(client_address(environ, self.trust_proxy))
        if refusal is not None:
            return refused(refusal)  # before any session, queue or ping task exists
        return super()._handle_connect(environ, start_response, transport, jsonp_index)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        task = super().start_background_task(target, *args, **kwargs)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, engineio.socket.Socket) and self.guard.is_pending(owner.sid):
            self._pending_tasks.setdefault(owner.sid, []).append(task)
        return task

    def release_tasks(self, sid: str, *, end: bool) -> None:
        """The session no longer waits to authenticate: forget its tasks, ending them if `end`."""
        for task in self._pending_tasks.pop(sid, ()):
            if end:
                task.kill(block=False)


def refused(refusal: Refusal) -> dict[str, Any]:
    """Engine.IO's form of an HTTP answer (CORS headers are added to it), in the envelope."""
    body = orjson.dumps(error_body(refusal.status, refusal.code, refusal.message))
    return {
        "status": f"{refusal.status} {REASONS[refusal.status]}",
        "headers": [("Content-Type", "application/json"), ("Retry-After", str(refusal.retry_after))],
        "response": body,
    }


class GuardedServer(socketio.Server):  # type: ignore[misc]  # python-socketio is untyped
    """python-socketio's Server, answering a packet it cannot decode with an `error` event, and
    bounding the sessions that have not authenticated (see handshakes.py).

    Upstream lets the decoding error escape to engine.io, which logs a traceback for every such
    packet (any client could fill the log) and tells the client nothing. This overrides private
    methods of python-socketio 5.x and python-engineio 4.x (pinned in requirements.txt);
    tests/live/socketio/test_socketio.py and test_handshakes.py notice if an upgrade stops
    calling them.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(**options)
        self.handshakes = HandshakeGuard(
            per_minute=settings.socketio_handshakes_per_minute,
            max_pending=settings.socketio_max_pending,
            connect_timeout_s=settings.socketio_connect_timeout_s,
        )
        self.eio.guard = self.handshakes
        self.eio.trust_proxy = settings.trust_proxy
        self._sweeping = False

    def _engineio_server_class(self) -> type[GuardedEngineIO]:
        return GuardedEngineIO

    def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        self.handshakes.opened(eio_sid)
        if not self._sweeping:  # in the worker (after the fork), at its first session
            self._sweeping = True
            self.start_background_task(self._sweep)
        super()._handle_eio_connect(eio_sid, environ)

    def _handle_connect(self, eio_sid: str, namespace: Any, data: Any) -> None:
        if not self.handshakes.connecting(eio_sid):
            super()._handle_connect(eio_sid, namespace, data)
            return
        authenticated = False
        try:
            super()._handle_connect(eio_sid, namespace, data)
            sid = self.manager.sid_from_eio_sid(eio_sid, NAMESPACE)
            authenticated = sid is not None and self.manager.is_connected(sid, NAMESPACE)
        finally:
            self.handshakes.connected(eio_sid, authenticated)
            if authenticated:
                self.eio.release_tasks(eio_sid, end=False)

    def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self.handshakes.closed(eio_sid)
        self.eio.release_tasks(eio_sid, end=False)
        super()._handle_eio_disconnect(eio_sid, reason)

    def _sweep(self) -> None:
        """Close the sessions that did not authenticate in time, and forget them at once."""
        interval = min(1.0, self.handshakes.connect_timeout_s / 4)
        while True:
            self.sleep(interval)
            try:
                for eio_sid in self.handshakes.overdue():
                    self._drop(eio_sid)
            except Exception:  # the sweep must go on
                log.exception("socket.io handshake sweep failed")

    def _drop(self, eio_sid: str) -> None:
        self.handshakes.closed(eio_sid)
        metrics.SOCKETIO_UNAUTHENTICATED_CLOSED.inc()
        self.eio.release_tasks(eio_sid, end=True)  # its ping timer would hold it ping_interval more
        sock = self.eio.sockets.pop(eio_sid, None)
        if sock is not None:
            # A CLOSE packet tells a client that polls or holds a WebSocket; no waiting for it
            # to be read (an abandoned polling session never reads it).
            sock.close(wait=False, abort=False, reason=self.eio.reason.SERVER_DISCONNECT)

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            super()._handle_eio_message(eio_sid, data)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # One line, no traceback: visible if it is ours after all, cheap if a client floods.
            log.warning("malformed Socket.IO packet (%s: %s)", type(exc).__name__, str(exc)[:200])
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None and self.manager.is_connected(sid, "/"):
                self.emit("error", {"message": "Malformed Socket.IO packet"}, to=sid)


def new_server(settings: Settings, sid_prefix: str = "") -> GuardedServer:
    server = GuardedServer(
        settings,
        async_mode="gevent",
        cors_allowed_origins=lambda origin, environ: origin_allowed(settings, origin, environ),
        max_http_buffer_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )
    server.eio.sid_prefix = sid_prefix
    return server


def origin_allowed(settings: Settings, origin: str | None, environ: dict[str, Any]) -> bool:
    """ALLOWED_ORIGINS, plus this service's own origin (its dashboard page)."""
    origins = settings.allowed_origins
    if origin is None or "*" in origins or origin in origins:
        return True
    return origin == f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
