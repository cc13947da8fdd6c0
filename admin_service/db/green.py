"""psycopg2 made cooperative under gevent, with a client-side deadline on every wait for the server.

PostgreSQL's statement_timeout is enforced by the server: a server that is stopped (SIGSTOP, a
frozen VM, a storage stall) or unreachable behind a live TCP peer enforces nothing, and the
kernel keeps acknowledging what is sent, so TCP keepalives and tcp_user_timeout see a healthy
connection too. psycogreen's wait callback (which this replaces) then waits forever. This one waits at most a deadline
per statement (and per connection attempt): DB_STATEMENT_TIMEOUT_MS + CLIENT_GRACE_S by default,
so a live server always answers first with its own timeout (57014), or less inside
`statement_deadline` (the readiness probe, the rate-limit store). When the deadline passes the
callback raises ClientTimeout; psycopg2 then closes the connection (a statement cut off
client-side leaves it in an unknown state), SQLAlchemy sees a disconnect and discards it, and
the request answers 503 like any unreachable database.

Installed in each gunicorn worker (lifecycle.post_fork); elsewhere (commands, tests' in-process
apps) psycopg2 blocks as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg2
from psycopg2 import extensions

# How much longer than statement_timeout a statement may take before the client gives up on the
# server: the server's own cancel and its answer need a moment.
CLIENT_GRACE_S = 1.0

_default_deadline_s: float | None = None
# Per greenlet: each greenlet runs in a context of its own. (Not a threading.local: this module is
# imported in post_fork, before gevent's worker patches threading, so it would be one per thread.)
_deadline_s: ContextVar[float | None] = ContextVar("statement_deadline_s", default=None)


class ClientTimeout(psycopg2.OperationalError):
    """The server did not answer within the client's deadline (the connection is closed)."""


def install(statement_timeout_ms: int) -> None:
    """Make psycopg2 cooperative in this (gevent-patched) process, bounding every wait."""
    global _default_deadline_s
    _default_deadline_s = statement_timeout_ms / 1000 + CLIENT_GRACE_S
    extensions.set_wait_callback(wait_with_deadline)


@contextmanager
def statement_deadline(seconds: float) -> Iterator[None]:
    """Statements in this block (this greenlet only) wait at most `seconds` for the server."""
    previous = _deadline_s.get()
    token = _deadline_s.set(seconds if previous is None else min(seconds, previous))
    try:
        yield
    finally:
        _deadline_s.reset(token)


def current_deadline_s() -> float | None:
    own = _deadline_s.get()
    return own if own is not None else _default_deadline_s


def wait_with_deadline(conn: Any, timeout: float | None = None) -> None:
    """psycopg2's wait callback (see psycogreen's gevent_wait_callback), with the deadline."""
    from gevent.socket import wait_read, wait_write  # type: ignore[import-untyped, unused-ignore]

    limit = current_deadline_s()
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ClientTimeout(f"the database did not answer within {limit:.1f} s (client-side deadline)")
        expired = ClientTimeout(f"the database did not answer within {limit:.1f} s (client-side deadline)")
        if state == extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=remaining, timeout_exc=expired)
        elif state == extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=remaining, timeout_exc=expired)
        else:
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
