"""Per-user caps on open live connections (SSE streams, Socket.IO sockets) across every worker and
instance: rows in the service's schema (migration 0003), one per open connection, each owned by
a worker whose lease it renews every LEASE_RENEW_S.

`admit` counts the user's connections of that kind on the workers whose lease is fresh and, below
the cap, records one more, in one call (`live_admit`, serialised per user by an advisory lock:
two workers never both take the last place). A connection's row goes when it closes; a worker
killed with SIGKILL closes nothing, but its lease lapses LEASE_S later and its rows stop counting
(and are deleted an hour on). A database that cannot answer does not refuse anyone: the
connection is admitted unrecorded (a warning says so), as the streams themselves keep running
through an outage.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from sqlalchemy import Engine, text

from admin_service.db.green import statement_deadline

log = logging.getLogger("admin_service.live")

SSE = "sse"
SOCKETIO = "socketio"
LEASE_S = 15.0
LEASE_RENEW_S = 5.0
# Rows of workers gone this long are deleted (until then they only stop counting).
FORGET_AFTER = "1 hour"
CAPS_DEADLINE_S = 2.0


class ConnectionCaps:
    def __init__(self, engine: Engine, schema: str) -> None:
        self.engine = engine
        # Built in the worker (after the fork): one id per process.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._admit = text(f'SELECT "{schema}".live_admit(:id, :worker, :kind, :user, :cap, :lease)')
        self._release = text(f'DELETE FROM "{schema}".live_connections WHERE id = :id')
        self._renew = text(
            f'INSERT INTO "{schema}".live_workers (worker, expires_at) VALUES (:worker, now() + make_interval(secs => :lease)) '
            "ON CONFLICT (worker) DO UPDATE SET expires_at = excluded.expires_at"
        )
        self._forget = text(
            f'DELETE FROM "{schema}".live_connections c USING "{schema}".live_workers w '
            f"WHERE c.worker = w.worker AND w.expires_at < now() - interval '{FORGET_AFTER}'; "
            f"DELETE FROM \"{schema}\".live_workers WHERE expires_at < now() - interval '{FORGET_AFTER}'"
        )
        self._leave = text(
            f'DELETE FROM "{schema}".live_connections WHERE worker = :worker; '
            f'DELETE FROM "{schema}".live_workers WHERE worker = :worker'
        )

    def admit(self, kind: str, user_id: str, cap: int) -> tuple[bool, str]:
        """(admitted, connection id): False when the user has `cap` connections of this kind open."""
        conn_id = uuid.uuid4().hex
        try:
            with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
                admitted = conn.execute(
                    self._admit,
                    {"id": conn_id, "worker": self.worker, "kind": kind, "user": user_id, "cap": cap, "lease": LEASE_S},
                ).scalar()
        except Exception as exc:
            log.warning("%s connection cap not checked (database unavailable: %s); admitted", kind, type(exc).__name__)
            return True, conn_id
        return bool(admitted), conn_id

    def release(self, conn_id: str) -> None:
        try:
            with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
                conn.execute(self._release, {"id": conn_id})
        except Exception as exc:  # its worker's lease lapses at exit; until then it counts
            log.warning("could not release a live connection's place (%s)", type(exc).__name__)

    def renew(self) -> None:
        with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
            conn.execute(self._renew, {"worker": self.worker, "lease": LEASE_S})
            conn.execute(self._forget)

    def leave(self) -> None:
        """At a clean exit: this worker's places are free at once, not a lease later."""
        try:
            with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
                conn.execute(self._leave, {"worker": self.worker})
        except Exception as exc:
            log.warning("could not release this worker's live connections (%s)", type(exc).__name__)

    def run(self, stop: threading.Event) -> None:
        """Renew this worker's lease until `stop` (a LiveRuntime loop)."""
        while True:
            try:
                self.renew()
            except Exception as exc:  # the database is down: the lease lapses, the streams go on
                log.warning("live connections' lease not renewed: %s", type(exc).__name__)
            if stop.wait(LEASE_RENEW_S):
                return
