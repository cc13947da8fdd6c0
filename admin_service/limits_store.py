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

A store that cannot answer (the database down or hung: each statement waits at most
STORE_DEADLINE_S) raises limits' StorageError; flask-limiter then fails open to its in-memory
fallback or closed, as RATE_LIMIT_FAIL_OPEN says (ratelimit.py).
"""

from __future__ import annotations

import threading
import time
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


class DatabaseStorage(Storage, MovingWindowSupport):
    """Bucketed moving windows in `<ADMIN_SCHEMA>.rate_limits` (flask-limiter's moving-window
    strategy); fixed-window counters are not offered."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.engine: Engine = options["engine"]
        schema = options["schema"]
        self._acquire = text(f'SELECT acquired, oldest, hit_count FROM "{schema}".rate_limit_acquire(:k, :lim, :exp, :n)')
        self._window = text(f'SELECT oldest, hit_count FROM "{schema}".rate_limit_window(:k, :exp)')
        self._prune = text(f'DELETE FROM "{schema}".rate_limits WHERE expires_at < extract(epoch FROM clock_timestamp())')
        self._clear = text(f'DELETE FROM "{schema}".rate_limits WHERE key = :k')
        self._reset = text(f'DELETE FROM "{schema}".rate_limits')
        self._check = text(f'SELECT 1 FROM "{schema}".rate_limits LIMIT 1')
        self._last_prune = time.monotonic()
        self._prune_lock = threading.Lock()
        self._remembered = threading.local()  # greenlet-local under gevent

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
        self._maybe_prune()
        acquired, oldest, count = self._run(self._acquire, k=key, lim=limit, exp=float(expiry), n=amount)
        self._remembered.window = (key, expiry, time.monotonic(), (float(oldest), int(count)))
        return bool(acquired)

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
