"""Engine.IO sessions that have not authenticated yet: how many, how old, how often per address.

An Engine.IO handshake (`GET /admin/socket.io/?EIO=4&transport=polling`) needs no token: the
token comes later, in the Socket.IO CONNECT packet. Unbounded, a flood of handshakes made each
worker hold tens of thousands of sessions (460 MB per worker after 57,000 in 70 s). So, per
worker:

- a client address may open SOCKETIO_HANDSHAKES_PER_MINUTE sessions (a token bucket holding a
  minute's worth; beyond it 429 with Retry-After);
- at most SOCKETIO_MAX_PENDING sessions wait for their CONNECT at once (beyond it 503);
- a session whose CONNECT with a valid token has not come SOCKETIO_CONNECT_TIMEOUT_S after its
  handshake is closed and dropped (a refused CONNECT leaves it waiting, on the same deadline).

Refusals and closures are counted (metrics) and logged, at most one line per LOG_EVERY_S.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

from admin_service import metrics
from admin_service.live.socketio.limits import TokenBucket

log = logging.getLogger("admin_service.socketio")

# Addresses whose handshake budgets are remembered; past that the least recently seen is
# forgotten (a flood from many addresses must not grow this table either).
MAX_ADDRESSES = 10_000
LOG_EVERY_S = 10.0
RATE, CAPACITY = "rate", "capacity"  # why a handshake was refused (the metric's label)


class Refusal:
    """A handshake refused: its status, envelope code, message and Retry-After (seconds)."""

    def __init__(self, reason: str, status: int, code: str, message: str, retry_after: int) -> None:
        self.reason = reason
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class HandshakeGuard:
    def __init__(
        self,
        *,
        per_minute: int,
        max_pending: int,
        connect_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_pending = max_pending
        self.connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        # eio sid -> deadline, in handshake order (one timeout for all: deadlines ascend).
        self._pending: dict[str, float] = {}
        self._connecting: set[str] = set()  # their CONNECT is being handled: not closed meanwhile
        self._refused: Counter[str] = Counter()
        self._logged_at = 0.0

    # -- at the handshake ------------------------------------------------------------------
    def admit(self, address: str) -> Refusal | None:
        """Count a handshake from this address, or say why it is refused."""
        if not self._bucket(address).take():
            return self._refuse(
                address,
                Refusal(
                    RATE,
                    429,
                    "RATE_LIMIT_EXCEEDED",
                    f"Too many Socket.IO handshakes from this address (limit {self.per_minute} per minute); retry later",
                    max(1, math.ceil(60 / self.per_minute)),
                ),
            )
        if len(self._pending) >= self.max_pending:
            return self._refuse(
                address,
                Refusal(
                    CAPACITY,
                    503,
                    "SERVICE_UNAVAILABLE",
                    "Too many Socket.IO sessions are waiting to authenticate; retry shortly",
                    max(1, math.ceil(self.connect_timeout_s)),
                ),
            )
        return None

    def opened(self, eio_sid: str) -> None:
        """A session was opened: it has connect_timeout_s to authenticate."""
        self._pending[eio_sid] = self._clock() + self.connect_timeout_s
        metrics.SOCKETIO_PENDING.set(len(self._pending))

    def is_pending(self, eio_sid: str) -> bool:
        return eio_sid in self._pending

    # -- at the Socket.IO CONNECT ----------------------------------------------------------
    def connecting(self, eio_sid: str) -> bool:
        """Its CONNECT arrived; False when the session is not waiting for one."""
        if eio_sid not in self._pending:
            return False
        self._connecting.add(eio_sid)
        return True

    def connected(self, eio_sid: str, authenticated: bool) -> None:
        """Its CONNECT was handled: authenticated, the session is no longer this guard's."""
        self._connecting.discard(eio_sid)
        if authenticated:
            self.closed(eio_sid)

    def closed(self, eio_sid: str) -> None:
        if self._pending.pop(eio_sid, None) is not None:
            metrics.SOCKETIO_PENDING.set(len(self._pending))
        self._connecting.discard(eio_sid)

    # -- the sweep -------------------------------------------------------------------------
    def overdue(self) -> list[str]:
        """The sessions past their deadline (not those whose CONNECT is being handled)."""
        now = self._clock()
        late = []
        for eio_sid, deadline in list(self._pending.items()):
            if deadline > now:
                break
            if eio_sid not in self._connecting:
                late.append(eio_sid)
        self.flush_log()
        return late

    def flush_log(self) -> None:
        if self._refused and self._clock() - self._logged_at >= LOG_EVERY_S:
            self._logged_at = self._clock()
            counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self._refused.items()))
            log.warning("socket.io handshakes refused in the last %.0f s (%s)", LOG_EVERY_S, counts)
            self._refused.clear()

    # -- inside ----------------------------------------------------------------------------
    def _bucket(self, address: str) -> TokenBucket:
        bucket = self._buckets.pop(address, None)  # re-inserted: the table stays in recency order
        if bucket is None:
            bucket = TokenBucket(self.per_minute / 60)
            bucket.capacity = bucket.tokens = float(self.per_minute)  # a minute's worth at once
            if len(self._buckets) >= MAX_ADDRESSES:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[address] = bucket
        return bucket

    def _refuse(self, address: str, refusal: Refusal) -> Refusal:
        metrics.SOCKETIO_HANDSHAKES_REFUSED.labels(refusal.reason).inc()
        self._refused[refusal.reason] += 1
        if not self._logged_at or self._clock() - self._logged_at >= LOG_EVERY_S:
            log.warning("socket.io handshake refused (%s) from %s", refusal.reason, address)
            self._logged_at = self._clock()
            self._refused.clear()
        return refusal
