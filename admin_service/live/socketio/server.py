"""The Socket.IO server: python-socketio in gevent mode, with this service's transport settings."""

from __future__ import annotations

import logging
from typing import Any

import socketio  # type: ignore[import-untyped, unused-ignore]  # no stubs; kept narrow by this module

from admin_service.config import Settings

log = logging.getLogger("admin_service.socketio")


class GuardedServer(socketio.Server):  # type: ignore[misc]  # python-socketio is untyped
    """python-socketio's Server, answering a packet it cannot decode with an `error` event.

    Upstream lets the decoding error escape to engine.io, which logs a traceback for every such
    packet (any client could fill the log) and tells the client nothing. This overrides a
    private method of python-socketio 5.x (pinned in requirements.txt); tests/live/socketio/test_socketio.py
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


def new_server(settings: Settings) -> GuardedServer:
    return GuardedServer(
        async_mode="gevent",
        cors_allowed_origins=lambda origin, environ: origin_allowed(settings, origin, environ),
        max_http_buffer_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )


def origin_allowed(settings: Settings, origin: str | None, environ: dict[str, Any]) -> bool:
    """ALLOWED_ORIGINS, plus this service's own origin (its dashboard page)."""
    origins = settings.allowed_origins
    if origin is None or "*" in origins or origin in origins:
        return True
    return origin == f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
