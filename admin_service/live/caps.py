"""Per-user caps on open live connections (SSE streams, Socket.IO sockets) across every worker and
instance: in the service's schema (migration 0007), how many connections of each kind each worker
has open per user, one row per (user, kind, worker), each worker renewing its lease every
LEASE_RENEW_S.

`admit` sums the user's places of that kind on the workers whose lease is fresh and, below the
cap, takes one more, in one call (`live_admit`, serialised per user by an advisory lock: two
workers never both take the last place). Constant time per admission: with a row per connection,
counting them made opening ten thousand streams of one admin quadratic, and the admissions then
held the pool's connections long enough to starve every other query of the worker. A place is
released when its connection closes; a worker killed with SIGKILL closes nothing, but its lease
lapses LEASE_S later and its places stop counting (and are deleted an hour on). A database that
cannot answer does not refuse anyone: the connection is admitted unrecorded (a warning says so;
nothing is released for it), as the streams themselves keep running through an outage.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Place:
    """One open connection's place among its user's cap, as `release` needs it."""

    kind: str
    user_id: str
    recorded: bool  # False: admitted while the database was unreachable (nothing to release)


class ConnectionCaps:
    def __init__(self, engine: Engine, schema: str) -> None:
        self.engine = engine
        # Built in the worker (after the fork): one id per process.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._admit = text(f'SELECT "{schema}".live_admit(:worker, :kind, :user, :cap, :lease)')
        self._release = text(f'SELECT "{schema}".live_release(:worker, :kinds, :users, :counts)')
        # Places closed and not yet released, by (kind, user): released together, one statement
        # for all of them, by whichever closing connection finds no release under way. Ten
        # thousand streams dropped at once (a network blip, the bench ending) would otherwise
        # take ten thousand pooled connections in turn, and every request of the worker would
        # wait behind them for the pool (or time out, leaving places counted).
        self._closed: Counter[tuple[str, str]] = Counter()
        self._closed_lock = threading.Lock()
        self._releasing = False
        self._renew = text(
            f'INSERT INTO "{schema}".live_workers (worker, expires_at) VALUES (:worker, now() + make_interval(secs => :lease)) '
            "ON CONFLICT (worker) DO UPDATE SET expires_at = excluded.expires_at"
        )
        self._forget = text(
            f'DELETE FROM "{schema}".live_counts c USING "{schema}".live_workers w '
            f"WHERE c.worker = w.worker AND w.expires_at < now() - interval '{FORGET_AFTER}'; "
            f"DELETE FROM \"{schema}\".live_workers WHERE expires_at < now() - interval '{FORGET_AFTER}'"
        )
        self._leave = text(
            f'DELETE FROM "{schema}".live_counts WHERE worker = :worker; '
            f'DELETE FROM "{schema}".live_workers WHERE worker = :worker'
        )

    def admit(self, kind: str, user_id: str, cap: int) -> tuple[bool, Place]:
        """(admitted, the place to release): False when the user has `cap` connections of this kind open."""
        try:
            with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
                admitted = conn.execute(
                    self._admit, {"worker": self.worker, "kind": kind, "user": user_id, "cap": cap, "lease": LEASE_S}
                ).scalar()
        except Exception as exc:
            log.warning("%s connection cap not checked (database unavailable: %s); admitted", kind, type(exc).__name__)
            return True, Place(kind, user_id, recorded=False)
        return bool(admitted), Place(kind, user_id, recorded=bool(admitted))

    def release(self, place: Place) -> None:
        """Free a closed connection's place (with every other place closed meanwhile)."""
        if not place.recorded:
            return
        with self._closed_lock:
            self._closed[(place.kind, place.user_id)] += 1
        self._release_closed()

    def _release_closed(self) -> None:
        with self._closed_lock:
            if self._releasing:
                return  # the release under way takes this one too
            self._releasing = True
        try:
            while True:
                with self._closed_lock:
                    batch, self._closed = self._closed, Counter()
                if not batch:
                    return
                try:
                    with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
                        keys = list(batch)
                        conn.execute(
                            self._release,
                            {
                                "worker": self.worker,
                                "kinds": [kind for kind, _ in keys],
                                "users": [user for _, user in keys],
                                "counts": [batch[key] for key in keys],
                            },
                        )
                except Exception as exc:  # kept for the lease loop's next try; until then they count
                    with self._closed_lock:
                        self._closed.update(batch)
                    log.warning("could not release %d live connection place(s) yet (%s)", batch.total(), type(exc).__name__)
                    return
        finally:
            with self._closed_lock:
                self._releasing = False

    def renew(self) -> None:
        with statement_deadline(CAPS_DEADLINE_S), self.engine.begin() as conn:
            conn.execute(self._renew, {"worker": self.worker, "lease": LEASE_S})
            conn.execute(self._forget)
        self._release_closed()  # what an earlier release could not (the database was down)

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
