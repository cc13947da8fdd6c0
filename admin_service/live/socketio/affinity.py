"""Each Engine.IO session stays on the worker that opened it, with every worker serving REST.

python-engineio keeps a session (its packet queue, its waiting long-poll) in the memory of the
process that opened it. Under gunicorn every worker accepts on the same port, so the next
polling request of a session (or its upgrade to WebSocket) lands on any worker: with two
workers, about 7 in 10 polling-only connects failed with "Invalid session".

So a session id starts with its worker's tag (8 hex digits, random per worker process), each
worker also listens on `<socket dir>/<tag>.sock` (a folder the gunicorn master makes, 0700), and
a worker that receives a request for another worker's session forwards it there: a polling
request as one HTTP exchange over the Unix socket, a WebSocket upgrade as a byte pipe for the
life of the socket. The owner serves the forwarded request through gunicorn's own request
handling, as if it had accepted the connection itself. A request for a tag with no listening
worker (it exited) is answered here, by Engine.IO, as an unknown session: the client reconnects.

Outside gunicorn (no socket dir), nothing is forwarded.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterable
from contextlib import suppress
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

# The folder of the workers' sockets: made and removed by the gunicorn master (admin_service/lifecycle.py).
SOCKET_DIR_ENV = "ADMIN_SERVICE_WORKER_SOCKETS"
TAG_LENGTH = 8
_TAG = re.compile(r"[0-9a-f]{8}")
# Set by the forwarding worker; believed only on a request that arrived on the worker socket.
FORWARDED_PROTO = "X-Admin-Service-Forwarded-Proto"
FORWARDED_FOR = "X-Admin-Service-Forwarded-For"
_PROTO_KEY = "HTTP_" + FORWARDED_PROTO.upper().replace("-", "_")
_FOR_KEY = "HTTP_" + FORWARDED_FOR.upper().replace("-", "_")
# Longer than a long-poll is held open (python-engineio answers within ping_interval, 20 s).
FORWARD_TIMEOUT_S = 60.0
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"}
)
_PIPE_CHUNK = 65536


class WorkerAffinity:
    """This worker's tag, where the workers listen, and who owns a session id."""

    def __init__(self, socket_dir: str | None) -> None:
        self.tag = secrets.token_hex(TAG_LENGTH // 2)
        self.socket_dir = socket_dir

    @classmethod
    def from_environment(cls) -> WorkerAffinity:
        return cls(os.environ.get(SOCKET_DIR_ENV) or None)

    def socket_path(self, tag: str) -> str:
        assert self.socket_dir is not None
        return os.path.join(self.socket_dir, f"{tag}.sock")

    @property
    def own_socket_path(self) -> str | None:
        return self.socket_path(self.tag) if self.socket_dir else None

    def owner(self, sid: str) -> str | None:
        """The tag of the worker that opened session `sid`, None for an id no worker made."""
        tag = sid[:TAG_LENGTH]
        return tag if len(sid) > TAG_LENGTH and _TAG.fullmatch(tag) else None


class SessionAffinityApp:
    """WSGI middleware in front of the Socket.IO app: forwards another worker's sessions."""

    def __init__(self, app: WSGIApplication, affinity: WorkerAffinity, socketio_path: str) -> None:
        self.app = app
        self.affinity = affinity
        self.prefix = "/" + socketio_path.strip("/")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.affinity.socket_dir is None or not environ.get("PATH_INFO", "").startswith(self.prefix):
            return self.app(environ, start_response)
        if _PROTO_KEY in environ or _FOR_KEY in environ:
            if self._arrived_on_own_socket(environ):
                # Forwarded by a sibling: the client's scheme (for the same-origin check) and address.
                environ["wsgi.url_scheme"] = environ.pop(_PROTO_KEY, environ["wsgi.url_scheme"])
                environ["REMOTE_ADDR"] = environ.pop(_FOR_KEY, environ.get("REMOTE_ADDR", ""))
                return self.app(environ, start_response)
            environ.pop(_PROTO_KEY, None)  # a client's own: not believed
            environ.pop(_FOR_KEY, None)
        sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [""])[0]
        owner = self.affinity.owner(sid) if sid else None
        if owner is None or owner == self.affinity.tag:
            return self.app(environ, start_response)
        path = self.affinity.socket_path(owner)
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            client = environ.get("gunicorn.socket")
            upstream = _connect(path) if isinstance(client, socket.socket) else None
            if upstream is None or not isinstance(client, socket.socket):
                return self.app(environ, start_response)
            _pipe_upgrade(environ, client, upstream)
            # As simple-websocket does under gunicorn: the connection is over, write no response.
            raise StopIteration
        return self._forward_poll(environ, start_response, path)

    def _arrived_on_own_socket(self, environ: WSGIEnvironment) -> bool:
        sock = environ.get("gunicorn.socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return False
        with suppress(OSError):
            return bool(sock.getsockname() == self.affinity.own_socket_path)
        return False

    def _forward_poll(self, environ: WSGIEnvironment, start_response: StartResponse, path: str) -> Iterable[bytes]:
        upstream = _connect(path)
        if upstream is None:  # that worker is gone: Engine.IO answers "Invalid session" here
            return self.app(environ, start_response)
        conn = _UnixHTTPConnection(upstream)
        try:
            length = environ.get("CONTENT_LENGTH") or ""
            # A body of known length is streamed on; python-engineio bounds it (max_http_buffer_size).
            body = environ["wsgi.input"] if length else environ["wsgi.input"].read()
            headers = _request_headers(environ, upgrade=False)
            if length:
                headers.append(("Content-Length", length))
            conn.putrequest(environ["REQUEST_METHOD"], _target(environ), skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            if length:
                _copy_body(body, conn, int(length))
            elif body:
                conn.send(body)
            response = conn.getresponse()
            content = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            start_response(f"{response.status} {response.reason}", [*kept, ("Content-Length", str(len(content)))])
            return [content]
        finally:
            conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an already connected Unix socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__("localhost", timeout=FORWARD_TIMEOUT_S)
        self.sock = sock

    def connect(self) -> None:  # pragma: no cover  (the socket is connected before use)
        raise OSError("not reconnectable")


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(FORWARD_TIMEOUT_S)
    try:
        sock.connect(path)
    except OSError:  # no such worker (any more)
        sock.close()
        return None
    return sock


def _target(environ: WSGIEnvironment) -> str:
    raw = environ.get("RAW_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING", "")
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return f"{path}?{query}" if query else path


def _request_headers(environ: WSGIEnvironment, *, upgrade: bool) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if not key.startswith("HTTP_") or key in (_PROTO_KEY, _FOR_KEY):
            continue
        name = key[5:].replace("_", "-").title()
        if not upgrade and name.lower() in _HOP_BY_HOP:
            continue
        headers.append((name, str(value)))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", str(environ["CONTENT_TYPE"])))
    headers.append((FORWARDED_PROTO, str(environ.get("wsgi.url_scheme", "http"))))
    headers.append((FORWARDED_FOR, str(environ.get("REMOTE_ADDR", ""))))
    if not upgrade:
        headers.append(("Connection", "close"))
    return headers


def _copy_body(body: object, conn: http.client.HTTPConnection, length: int) -> None:
    read = getattr(body, "read")  # noqa: B009  (wsgi.input: a file-like object without a type)
    left = length
    while left > 0:
        chunk = read(min(left, _PIPE_CHUNK))
        if not chunk:
            break
        conn.send(chunk)
        left -= len(chunk)


def _pipe_upgrade(environ: WSGIEnvironment, client: socket.socket, upstream: socket.socket) -> None:
    """Send the upgrade request to the owner, then copy bytes both ways until either side ends."""
    head = [f"{environ['REQUEST_METHOD']} {_target(environ)} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in _request_headers(environ, upgrade=True)]
    upstream.settimeout(None)  # a WebSocket may stay quiet between pings
    try:
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        # Under gevent's monkey-patching this thread is a greenlet.
        back = threading.Thread(target=_pump, args=(upstream, client), name="socketio-upgrade-pipe", daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
    finally:
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(_PIPE_CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        # The other direction sees the end too (a half-close, then the pipe ends).
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
