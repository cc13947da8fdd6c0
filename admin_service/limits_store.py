"""limits' storage in the service's own PostgreSQL: RATE_LIMIT and AUTH_FAILURE_LIMIT counted once
for every worker of every instance, with nothing to run besides the database the service needs
anyway (RATE_LIMIT_STORAGE_URI=database://, the default).

One window per key (a client's user id or address, and the limit), in the UNLOGGED table
`rate_limits` (migration 0003): the hits of the last window as counts in 60 buckets of 1/60 of
it, plus the bucket the window's start falls in, all counted. So a hit counts for up to 1/60 of
the window longer than a moving window would (a client at its limit waits up to a second more
per minute), never shorter: no span of the window's length ever lets more than the limit
through, on any number of workers and instances. The row is 61 integers whatever the limit.
A request costs one call of `rate_limit_acquire`, which shifts the buckets, takes the hit when
there is room and returns the window (its start and count) in the same round trip. flask-limiter
then asks for that window again for its X-RateLimit-* headers: the answer just returned is
remembered for that (this greenlet's request), so the headers cost no second statement.
PostgreSQL's clock places the hits, so instances with skewed clocks still share one window.

Local reservations (RATE_LIMIT_LOCAL_BATCH, 32 by default; 1 turns them off): a process that
serves one key often takes several hits in one call and grants them to its next requests
itself, so a busy client costs one round trip per batch instead of one per request. What holds:
- never more than the limit: every hit granted was taken in the store first;
- the same window: a reserved hit is granted only while PostgreSQL's clock is still in the
  bucket it was counted in (the call reads the clock before and after itself; the deadline is
  the bucket's end by it, less a margin), so it counts for at least the window after the
  request it admits, as an unreserved hit does;
- the same count: hits a bucket ended on before they were granted are taken back out of it
  (an UPDATE of that bucket at the key's next call, or at the next prune): the window holds
  the hits granted. Until then they count (a client may be refused early, never let through
  more). A call that straddles a bucket's end (about its duration in the bucket's length: 1 in
  ~1,000 at 1 s buckets on a loaded machine) keeps none of its batch, as where they went is not
  known: those count until they leave the window;
- one call per key and process at a time: requests that find the batch spent wait for the call
  on its way (sized for them too) rather than each making one. Batches grow with the rate the
  process sees (doubling while each runs out before its bucket ends, shrinking to what was used
  otherwise) and are at most 1/32 of what the window had left, so near its limit a client is
  counted one request at a call as before;
- X-RateLimit-Remaining counts down by one per request from the store's figure at the
  process's last call (other processes' hits since then appear at its next call).
AUTH_FAILURE_LIMIT's failures are never reserved (each one counts at once everywhere).

A store that cannot answer (the database down or hung: each statement waits at most
STORE_DEADLINE_S) raises limits' StorageError; flask-limiter then fails open to its in-memory
fallback or closed, as RATE_LIMIT_FAIL_OPEN says (ratelimit.py).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from limits.storage import MovingWindowSupport, Storage
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from admin_service.db.green import statement_deadline

SCHEME = "database"
# A rate-limit statement is one indexed row: a database that takes longer is treated as down
# (the fallback) rather than holding every request that long.
STORE_DEADLINE_S = 1.0
# Windows whose newest hit is older than their length are deleted this often (per process).
PRUNE_EVERY_S = 60.0
# The window an acquire returned serves the headers' read of it for this long (same request).
REMEMBER_S = 1.0
# A reserved hit is granted until this long before its bucket ends by the database's clock (the
# answer's own travel, clock-rate drift).
RESERVE_MARGIN_S = 0.02
# A batch is at most this fraction of what the window had left (exact near the limit).
RESERVE_SHARE = 32
# Keys whose hits are never reserved: FailedAuthGuard's (ratelimit.py), whose limits' keys read
# "LIMITER/auth-failures/<address>/<amount>/<multiples>/<granularity>".
UNRESERVED = "/auth-failures/"


@dataclass
class Reservation:
    """Hits of one key taken in the store and not granted yet (this process)."""

    left: int
    deadline: float  # time.monotonic() after which they are not granted
    oldest: float
    count: int  # the window's hit count as the store returned it, less `left`
    batch: int  # the size of the batch that made it (the next one adapts from it)
    bucket: int  # the store's bucket its hits were counted in


class DatabaseStorage(Storage, MovingWindowSupport):
    """Bucketed moving windows in `<ADMIN_SCHEMA>.rate_limits` (flask-limiter's moving-window
    strategy); fixed-window counters are not offered."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.engine: Engine = options["engine"]
        schema = options["schema"]
        # The database's clock with the answer: where the bucket a reservation was counted in ends.
        # The database's clock just before and after the call, and the key's bucket before it
        # (the statement's snapshot): which bucket the hits went to, and when it ends.
        self._acquire = text(
            "WITH pre AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS t0, "
            f'(SELECT newest FROM "{schema}".rate_limits WHERE key = :k) AS newest) '
            "SELECT a.acquired, a.oldest, a.hit_count, pre.t0, extract(epoch FROM clock_timestamp())::float8, pre.newest "
            f'FROM pre, LATERAL "{schema}".rate_limit_acquire(:k, :lim, :exp, :n) AS a'
        )
        # Reserved hits never granted are taken back from the bucket they were counted in.
        self._refund = text(
            f'UPDATE "{schema}".rate_limits SET counts[61 - (newest - :b)] = greatest(0, counts[61 - (newest - :b)] - :n) '
            "WHERE key = :k AND newest - :b BETWEEN 0 AND 60"
        )
        self._window = text(f'SELECT oldest, hit_count FROM "{schema}".rate_limit_window(:k, :exp)')
        self._prune = text(f'DELETE FROM "{schema}".rate_limits WHERE expires_at < extract(epoch FROM clock_timestamp())')
        self._clear = text(f'DELETE FROM "{schema}".rate_limits WHERE key = :k')
        self._reset = text(f'DELETE FROM "{schema}".rate_limits')
        self._check = text(f'SELECT 1 FROM "{schema}".rate_limits LIMIT 1')
        self._last_prune = time.monotonic()
        self._prune_lock = threading.Lock()
        self._remembered = threading.local()  # greenlet-local under gevent
        self._batch_max: int = options.get("local_batch", 1)
        self._reserved: dict[str, Reservation] = {}
        self._refills: dict[str, threading.Event] = {}  # keys whose store call is on its way
        self._waiting: dict[str, int] = {}  # requests waiting for that call, per key
        self._refunds: list[tuple[str, int, int]] = []  # (key, bucket, hits) to take back
        self._reserved_lock = threading.Lock()  # held for no I/O

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (DBAPIError, PoolTimeoutError)

    def _run(self, statement: Any, **params: Any) -> Any:
        # begin(): committed on an engine with transactions too (on the service's autocommit
        # pool it sends nothing more).
        with statement_deadline(STORE_DEADLINE_S), self.engine.begin() as conn:
            result = conn.execute(statement, params)
            return result.one_or_none() if result.returns_rows else None

    # -- the moving window (the strategy the limiter uses) ---------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        reserving = amount == 1 and self._batch_max > 1 and UNRESERVED not in key
        if not reserving:
            return self._acquire_in_store(key, limit, expiry, amount, amount)
        # One call at a time per key: the requests that find the reservation spent while a call
        # for more is on its way wait for its batch (sized for them too) rather than each making
        # a call of its own; one that still finds none makes the next call.
        give_up = time.monotonic() + STORE_DEADLINE_S
        while True:
            if self._grant_reserved(key, expiry):
                return True
            with self._reserved_lock:
                pending = self._refills.get(key)
                if pending is None:
                    refill = self._refills[key] = threading.Event()
                    waiting = self._waiting.get(key, 0)
                    break
                self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                pending.wait(max(0.0, give_up - time.monotonic()))
            finally:
                with self._reserved_lock:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]
            if time.monotonic() >= give_up:  # the store is slow: on our own, as without batches
                return self._acquire_in_store(key, limit, expiry, amount, amount)
        try:
            return self._acquire_in_store(key, limit, expiry, amount, self._next_batch(key, limit, waiting + 1))
        finally:
            with self._reserved_lock:
                del self._refills[key]
            refill.set()

    def _acquire_in_store(self, key: str, limit: int, expiry: int, amount: int, batch: int) -> bool:
        """Take `batch` hits (`amount` when the window has no room for them) and keep what is
        left of them for this key's next requests."""
        self._maybe_prune()
        with self._reserved_lock:  # this key's last batch ended with hits left: back first
            last = self._reserved.get(key)
            if last is not None and last.left and time.monotonic() >= last.deadline:
                self._refunds.append((key, last.bucket, last.left))
                last.count, last.left = last.count + last.left, 0
        self._take_back_unused()
        sent = time.monotonic()
        acquired, oldest, count, before, after, newest = self._run(self._acquire, k=key, lim=limit, exp=float(expiry), n=batch)
        if not acquired and batch > amount:  # the window has less room than the batch: one hit
            sent = time.monotonic()
            acquired, oldest, count, before, after, newest = self._run(
                self._acquire, k=key, lim=limit, exp=float(expiry), n=amount
            )
            batch = amount
        oldest, count = float(oldest), int(count)
        if acquired and amount == 1 and self._batch_max > 1 and UNRESERVED not in key:
            width = expiry / 60
            bucket = math.floor(before / width)
            # The call began and ended in one bucket: its hits are in it (or in the key's newer one,
            # when another instance's clock is ahead), grantable until it ends by the database's
            # clock. A call across a bucket's end (1 in ~5,000 at 1 s buckets) keeps none of them:
            # where they went is not known, so they count until they leave the window.
            known = math.floor(after / width) == bucket
            left = batch - amount if known else 0
            # Ending too soon to grant them (within the margin): taken back at the next call.
            deadline = sent + ((bucket + 1) * width - after) - RESERVE_MARGIN_S
            bucket = max(bucket, newest if newest is not None else bucket)
            with self._reserved_lock:
                other = self._reserved.get(key)
                if other is not None and other.left:
                    if other.bucket == bucket and time.monotonic() < other.deadline:
                        # Another request of this key took a batch meanwhile: its hits stay grantable.
                        left, deadline = left + other.left, min(deadline, other.deadline)
                    else:
                        self._refunds.append((key, other.bucket, other.left))
                self._reserved[key] = Reservation(left, deadline, oldest, count - left, batch, bucket)
            count -= left
        self._remembered.window = (key, expiry, time.monotonic(), (oldest, count))
        return bool(acquired)

    def _take_back_unused(self) -> None:
        """Take the reserved hits that were never granted (their bucket ended first) back out of
        the store's window: the window then holds exactly the hits granted. Until then (the
        key's next call, or the next prune) they count, refusing early, never letting more in."""
        with self._reserved_lock:
            if not self._refunds:
                return
            refunds, self._refunds = self._refunds, []
        for key, bucket, hits in refunds:
            try:
                self._run(self._refund, k=key, b=bucket, n=hits)
            except Exception:  # the store is down: those hits count until they leave the window
                pass

    def _grant_reserved(self, key: str, expiry: int) -> bool:
        """Grant one hit reserved for `key` in this process, if one is left in time."""
        with self._reserved_lock:
            reservation = self._reserved.get(key)
            if reservation is None or reservation.left == 0 or time.monotonic() >= reservation.deadline:
                return False
            reservation.left -= 1
            reservation.count += 1
            window = (reservation.oldest, reservation.count)
        self._remembered.window = (key, expiry, time.monotonic(), window)
        return True

    def _next_batch(self, key: str, limit: int, needed: int) -> int:
        """Hits to take for `key`: `needed` (the requests waiting now) for a key this process
        has not seen lately; else at least that, double the last batch when it ran out before
        its deadline, what it granted when it did not; at most 1/RESERVE_SHARE of what the
        window had left."""
        with self._reserved_lock:
            last = self._reserved.get(key)  # left as is: requests of this key that miss meanwhile see it too
        if last is None:
            return min(needed, self._batch_max, max(1, limit // RESERVE_SHARE))
        granted = last.batch - last.left
        ran_out_in_time = last.left == 0 and time.monotonic() < last.deadline
        wanted = max(needed, last.batch * 2 if ran_out_in_time else granted)
        room = (limit - last.count - last.left) // RESERVE_SHARE
        return max(1, min(wanted, self._batch_max, room))

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        remembered = getattr(self._remembered, "window", None)
        if remembered is not None:
            self._remembered.window = None
            r_key, r_expiry, at, window = remembered
            if r_key == key and r_expiry == expiry and time.monotonic() - at < REMEMBER_S:
                return window  # type: ignore[no-any-return]
        oldest, count = self._run(self._window, k=key, exp=float(expiry))
        return float(oldest), int(count)

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY_S or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._last_prune = now
            with self._reserved_lock:  # keys of clients gone quiet (addresses before auth, too)
                for key in [k for k, r in self._reserved.items() if r.deadline < now]:
                    gone = self._reserved.pop(key)
                    if gone.left:
                        self._refunds.append((key, gone.bucket, gone.left))
            self._take_back_unused()
            self._run(self._prune)
        finally:
            self._prune_lock.release()

    # -- limits' Storage interface ---------------------------------------------------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("the database store keeps moving windows only")

    def get(self, key: str) -> int:
        raise NotImplementedError("the database store keeps moving windows only")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("the database store keeps moving windows only")

    def check(self) -> bool:
        """Whether the store answers (flask-limiter's probe while it uses its fallback)."""
        try:
            self._run(self._check)
        except Exception:
            return False
        return True

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(self._reset).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._clear, {"k": key})
