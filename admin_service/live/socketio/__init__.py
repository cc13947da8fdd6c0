"""Socket.IO endpoint (path /admin/socket.io) for existing socket.io-client dashboards.

python-socketio handles the Engine.IO/Socket.IO protocols (gevent mode, WebSocket via
simple-websocket). Events come from the same per-process hub as SSE: the relay holds one hub
subscription and fans out with Socket.IO rooms, so no socket adds database work.

Client -> server: subscribe:jobs [filter], unsubscribe:jobs, subscribe:alerts,
unsubscribe:alerts, request:job-stats. Server -> client: job-stats, job-update,
job-alert, alert:new, alert:update (the last three to the alerts room), error {message}.

By role: affinity (each Engine.IO session kept on the worker that opened it), server (the
transport and its settings), namespace (the client events: auth, rate,
subscriptions), filters (job rooms by filter), relay (hub events to rooms), limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import socketio  # type: ignore[import-untyped, unused-ignore]  # no stubs
from flask import Flask

from admin_service.live.socketio.affinity import SessionAffinityApp, WorkerAffinity
from admin_service.live.socketio.filters import JobRooms
from admin_service.live.socketio.namespace import JobsNamespace
from admin_service.live.socketio.relay import Relay
from admin_service.live.socketio.server import new_server
from admin_service.services import services
from admin_service.web import came_over_https, with_security_headers

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

PATH = "admin/socket.io"


class SecuredWSGIApp(socketio.WSGIApp):  # type: ignore[misc]  # python-socketio is untyped
    """python-socketio's WSGI app, its answers (handshakes, polls, refusals) carrying the
    service's security headers like Flask's do (these it leaves as they are)."""

    def __init__(self, server: socketio.Server, flask_app: Flask, trust_proxy: bool) -> None:
        super().__init__(server, flask_app, socketio_path=PATH)
        self.flask_app = flask_app
        self.trust_proxy = trust_proxy

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        secure = came_over_https(environ, self.trust_proxy)
        return super().__call__(environ, with_security_headers(start_response, secure))  # type: ignore[no-any-return]


AFFINITY = "admin_service.socketio_affinity"


def mount_socketio(flask_app: Flask) -> SessionAffinityApp:
    """The WSGI app gunicorn serves: Socket.IO at /admin/socket.io (a request for another
    worker's session forwarded to it), Flask for the rest."""
    used = services(flask_app)
    runtime = used.runtime
    affinity = WorkerAffinity.from_environment()
    server = new_server(runtime.settings, sid_prefix=affinity.tag)
    rooms = JobRooms()
    namespace = JobsNamespace(runtime, used.authenticator, rooms, Relay(server, runtime.hub, runtime.stop, rooms))
    server.register_namespace(namespace)
    flask_app.extensions["admin_service.socketio"] = namespace
    flask_app.extensions[AFFINITY] = affinity
    wsgi = SessionAffinityApp(SecuredWSGIApp(server, flask_app, runtime.settings.trust_proxy), affinity, PATH)
    wsgi.flask_app = flask_app  # type: ignore[attr-defined]  # what lifecycle.py looks for
    return wsgi
