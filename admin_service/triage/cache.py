"""Answers shared per interval: one computation per key and TRIAGE_SHARE_MS per process, as
the job stats are shared (jobs/stats.py). Concurrent callers of a stale key wait for one
computation instead of each running the queries, and a key in use is recomputed in the
background before it expires, so that under steady use no request waits for one."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
log = logging.getLogger("admin_service.triage")

# Share of the interval after which a request starts a background recomputation (as the stats).
REFRESH_AHEAD = 0.8


class IntervalCache(Generic[V]):
    """Values by key, each reused for `interval_ms`; at most `max_entries` kept (least recently
    used dropped first), so a client sweeping ranges cannot grow it without bound."""

    def __init__(self, interval_ms: float, max_entries: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_ms = interval_ms
        self.clock = clock
        self.max_entries = max_entries
        self._values: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, key: Hashable, not_before: float) -> tuple[V, float] | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, computed = entry
        age_ms = (self.clock() - computed) * 1000
        if age_ms >= self.interval_ms or computed < not_before:
            return None
        self._values.move_to_end(key)
        return value, age_ms

    def get(self, key: Hashable, compute: Callable[[], V], *, fresh: bool = False) -> tuple[V, float]:
        """The value of `key` and its age in ms (0 when computed by this call). `fresh`
        recomputes unless a computation started after this call did."""
        started = self.clock()
        with self._guard:
            hit = None if fresh else self._fresh(key, 0.0)
            lock = self._locks.setdefault(key, threading.Lock())
        if hit is not None:
            if hit[1] >= self.interval_ms * REFRESH_AHEAD and not lock.locked():
                threading.Thread(target=self._refresh, args=(key, compute, lock), name="triage-refresh", daemon=True).start()
            return hit
        with lock:
            with self._guard:
                hit = self._fresh(key, started if fresh else 0.0)
            if hit is not None:
                return hit
            self._compute(key, compute)
            return self._values[key][0], 0.0

    def _compute(self, key: Hashable, compute: Callable[[], V]) -> None:
        begun = self.clock()
        value = compute()
        with self._guard:
            # Aged from when the queries started: the figures are at least that old.
            self._values[key] = (value, begun)
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                old, _ = self._values.popitem(last=False)
                self._locks.pop(old, None)

    def _refresh(self, key: Hashable, compute: Callable[[], V], lock: threading.Lock) -> None:
        if not lock.acquire(blocking=False):
            return  # a computation is already running
        try:
            self._compute(key, compute)
        except Exception as exc:  # the next request past the interval computes (and reports) it
            log.warning("background refresh of %s failed: %s", key[0] if isinstance(key, tuple) else key, type(exc).__name__)
        finally:
            lock.release()
