"""Open live connections re-checked against their tokens' users: a deactivated admin (or one who is
no longer an admin) loses the SSE streams and Socket.IO sockets already open, not only new requests.

Each worker keeps its open connections by token and, every AUTH_CACHE_SECONDS, verifies each
distinct token once more, through the same Authenticator as a request (whose user lookup is cached
for AUTH_CACHE_SECONDS: a change is seen within twice that). A token refused as invalid or
forbidden ends every connection that carries it, with the reason (SSE: a final `error` event
ACCESS_REVOKED; Socket.IO: an `error` event, then the disconnect). A check that cannot be made
(the database or the auth service down) ends nothing: the connections outlive an outage, as
they always did. Expiry stays the connections' own (TOKEN_EXPIRED at exp).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from admin_service.auth import Authenticator, AuthError, AuthFailure

log = logging.getLogger("admin_service.live")

REVOKED_MESSAGE = "Access revoked: the user is no longer an active admin"
# What ends a connection: one call, with the reason to tell the client.
Ender = Callable[[str], None]


@dataclass(eq=False)
class OpenConnection:
    token: str
    expires_at: float | None
    end: Ender
    ended: bool = field(default=False)


class OpenConnections:
    def __init__(self, authenticator: Authenticator, interval_s: float) -> None:
        self.authenticator = authenticator
        self.interval_s = max(interval_s, 1.0)
        self._open: set[OpenConnection] = set()
        self._lock = threading.Lock()

    def add(self, token: str, expires_at: float | None, end: Ender) -> OpenConnection:
        connection = OpenConnection(token, expires_at, end)
        with self._lock:
            self._open.add(connection)
        return connection

    def discard(self, connection: OpenConnection) -> None:
        with self._lock:
            self._open.discard(connection)

    def __len__(self) -> int:
        return len(self._open)

    def recheck(self) -> int:
        """Verify each open connection's token once; end those refused. How many ended."""
        with self._lock:
            by_token: dict[str, list[OpenConnection]] = {}
            for connection in self._open:
                by_token.setdefault(connection.token, []).append(connection)
        ended = 0
        now = time.time()
        for token, connections in by_token.items():
            if all(c.expires_at is not None and c.expires_at <= now for c in connections):
                continue  # expiring: each ends itself with TOKEN_EXPIRED
            try:
                self.authenticator.verifier.verify(token)
            except AuthError as exc:
                if exc.kind not in (AuthFailure.INVALID, AuthFailure.FORBIDDEN):
                    continue  # unavailable: cannot tell, keep them
                for connection in connections:
                    ended += self._end(connection)
            except Exception as exc:  # the user lookup failed: cannot tell, keep them
                log.debug("open connections not re-checked: %s", type(exc).__name__)
        if ended:
            log.info("ended %d live connection(s) whose token no longer names an active admin", ended)
        return ended

    def _end(self, connection: OpenConnection) -> int:
        self.discard(connection)
        if connection.ended:
            return 0
        connection.ended = True
        try:
            connection.end(REVOKED_MESSAGE)
        except Exception:
            log.exception("could not end a revoked live connection")
        return 1

    def run(self, stop: threading.Event) -> None:
        """Re-check every interval until `stop` (a LiveRuntime loop)."""
        while not stop.wait(self.interval_s):
            try:
                self.recheck()
            except Exception:
                log.exception("re-checking open live connections failed")
