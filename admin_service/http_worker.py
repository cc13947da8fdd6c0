"""gunicorn's gevent worker, with what the service needs at the HTTP level before Flask runs.

- A deadline for a request's line and headers (REQUEST_HEAD_TIMEOUT_S). The stock worker
  bounds a request's head only by `keepalive` (75 s here, so that balancers close idle
  connections first), from the moment it starts waiting: a client trickling its headers held a
  connection, and a descriptor, that long, and a few thousand of them held every descriptor.
  Here a connection's first request must have its head in within the deadline from accept; a
  kept-alive connection may idle for `keepalive`, and once a byte of the next request arrives,
  its head must be complete within the deadline. Late: 408 in the error envelope, and closed.
- gunicorn's own answers (400 for a malformed request, 414, 431, ...) in the error envelope
  with the security headers, instead of its HTML page: gunicorn writes them through
  gunicorn.util.write_error, replaced in each worker (tests/test_http_worker.py notices if an
  upgrade stops calling it).

gunicorn loads this class in the master (as it does its own gevent worker): the module imports
gevent and gunicorn only; the app's modules are imported where they are used, in the worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import gevent
from gevent import monkey
from gunicorn import util
from gunicorn.http import parser as http_parser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.ggevent import GeventWorker

from admin_service.config import number

log = logging.getLogger("admin_service.http")

HEAD_TIMEOUT_ENV = "REQUEST_HEAD_TIMEOUT_S"
HEAD_TIMEOUT_DEFAULT_S = 10.0
READ = 1  # libev's EV_READ
# Envelope codes of the answers gunicorn writes itself (malformed HTTP, not a field of ours).
CODES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    408: "REQUEST_TIMEOUT",
    414: "URI_TOO_LONG",
    417: "EXPECTATION_FAILED",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
}
MESSAGE_MAX = 200  # gunicorn's message may quote the client's bytes
# The standard library's poll (gevent patches the module): a zero-timeout look, no waiting
# (not select(), which fails on descriptors above 1024).
_poll = monkey.get_original("select", "poll")
POLLIN = 1


def head_timeout_s(env: Any = os.environ) -> float:
    """REQUEST_HEAD_TIMEOUT_S, checked like every setting (ConfigError naming it)."""
    value: float = number(0.5, 600)(env, HEAD_TIMEOUT_ENV, HEAD_TIMEOUT_DEFAULT_S, {})
    return value


def write_envelope_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's signature: the answer in the envelope, then gunicorn closes."""
    from admin_service.errors import error_body
    from admin_service.web import json_bytes, security_headers

    message = f"{reason}: {mesg}" if mesg else reason
    body = json_bytes(error_body(status_int, CODES.get(status_int, "ERROR"), message[:MESSAGE_MAX]))
    head = [
        f"HTTP/1.1 {status_int} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in security_headers(secure=False)),
    ]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class HeadTimeout(BaseException):
    """Thrown into a connection's greenlet when a request head is late. A BaseException, like
    gevent.Timeout, so that gunicorn's parser does not take it for a malformed request."""


class HeadDeadline:
    """The read deadline of the request heads on one connection: gunicorn's worker enters it
    (as its `timeout_ctx`) around reading each request's line and headers."""

    def __init__(self, sock: Any, head_s: float, idle_s: Any) -> None:
        self.sock = sock
        self.head_s = head_s
        self.idle_s = idle_s  # callable: `keepalive` may change (the shutdown watcher sets 0)
        self.first = True  # no request read yet on this connection
        self.started = False  # a byte of this request has arrived
        self._from_accept = True  # this head's deadline runs from accept (the first request)
        self._greenlet: Any = None
        self._timer: Any = None
        self._watch: Any = None

    def __enter__(self) -> HeadDeadline:
        self._greenlet = gevent.getcurrent()
        self.started = False
        # The first request's head counts from accept; a later one's from its first byte.
        self._from_accept, self.first = self.first, False
        self._arm(self.head_s if self._from_accept else self.idle_s())
        if self._readable():
            self._bytes_arrived()  # already there: the parser reads them without waiting
        else:
            self._watch = gevent.get_hub().loop.io(self.sock.fileno(), READ)
            self._watch.start(self._bytes_arrived)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self._stop()
        if kind is not HeadTimeout:
            return False
        if self.started:
            from admin_service import metrics

            metrics.REQUEST_HEAD_TIMEOUTS.inc()
            try:
                write_envelope_error(self.sock, 408, "Request Timeout", f"request headers not received within {self.head_s:g} s")
            except OSError:
                pass
        return True  # no request: gunicorn's loop closes the connection

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = gevent.get_hub().loop.timer(max(0.0, seconds))
        self._timer.start(self._expired)

    def _readable(self) -> bool:
        """Bytes wait in the socket (or, with TLS, decrypted in its buffer). Not seen: bytes
        gunicorn's parser already holds from an earlier read, i.e. a pipelined request's
        beginning; such a head is bounded by `keepalive`, as before."""
        pending = getattr(self.sock, "pending", None)
        if callable(pending) and pending() > 0:
            return True
        poller = _poll()
        poller.register(self.sock.fileno(), POLLIN)
        return bool(poller.poll(0))

    def _bytes_arrived(self) -> None:
        if self.started:  # once per head: later bytes must not push its deadline back
            return
        if self._watch is not None:
            self._watch.stop()
        self.started = True
        if not self._from_accept:
            self._arm(self.head_s)  # idle no more: the head's own deadline from now

    def _expired(self) -> None:
        # From the hub, as gevent.Timeout does: the greenlet is blocked reading the socket.
        self._greenlet.throw(HeadTimeout())

    def _stop(self) -> None:
        for watcher in (self._timer, self._watch):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._timer = self._watch = None


# Each connection's head deadline, by the greenlet serving it (HttpWorker.handle).
DEADLINES: dict[Any, HeadDeadline] = {}


class HeadAwareUnreader(SocketUnreader):  # type: ignore[misc]
    """gunicorn's socket reader, telling the connection's deadline that bytes came. The read
    watcher alone misses bytes that arrive between its look and the parser's first recv, which
    takes them without waiting (so the watcher never fires): such a client was closed at its
    deadline without the 408 (1 in 7 runs of 200 slow clients)."""

    def chunk(self, size_hint: int | None = None) -> bytes:
        data: bytes = super().chunk(size_hint)
        if data:
            deadline = DEADLINES.get(gevent.getcurrent())
            if deadline is not None:
                deadline._bytes_arrived()
        return data


class HttpWorker(GeventWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    head_s = HEAD_TIMEOUT_DEFAULT_S

    @classmethod
    def setup(cls) -> None:
        """In the master when gunicorn loads the class: a bad setting stops the start."""
        cls.head_s = head_timeout_s()

    def init_process(self) -> None:
        self._deadlines = DEADLINES
        util.write_error = write_envelope_error  # in this worker only (after the fork)
        http_parser.SocketUnreader = HeadAwareUnreader  # the parser's reader, in this worker only
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        current = gevent.getcurrent()
        self._deadlines[current] = HeadDeadline(client, self.head_s, lambda: self.cfg.keepalive)
        try:
            super().handle(listener, client, addr)
        finally:
            self._deadlines.pop(current, None)

    def timeout_ctx(self) -> Any:
        deadline = self._deadlines.get(gevent.getcurrent())
        return deadline if deadline is not None else super().timeout_ctx()
