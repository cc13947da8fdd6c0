"""Answers shared per interval: one computation per key and TRIAGE_SHARE_MS per process, as
the job stats are shared (jobs/stats.py). Concurrent callers of a stale key wait for one
computation instead of each running the queries."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class IntervalCache(Generic[V]):
    """Values by key, each reused for `interval_ms`; at most `max_entries` kept (least recently
    used dropped first), so a client sweeping ranges cannot grow it without bound."""

    def __init__(self, interval_ms: float, max_entries: int = 64) -> None:
        self.interval_ms = interval_ms
        self.max_entries = max_entries
        self._values: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, key: Hashable, not_before: float) -> tuple[V, float] | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, computed = entry
        age_ms = (time.monotonic() - computed) * 1000
        if age_ms >= self.interval_ms or computed < not_before:
            return None
        self._values.move_to_end(key)
        return value, age_ms

    def get(self, key: Hashable, compute: Callable[[], V], *, fresh: bool = False) -> tuple[V, float]:
        """The value of `key` and its age in ms (0 when computed by this call). `fresh`
        recomputes unless a computation started after this call did."""
        started = time.monotonic()
        with self._guard:
            hit = None if fresh else self._fresh(key, 0.0)
            if hit is not None:
                return hit
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                hit = self._fresh(key, started if fresh else 0.0)
            if hit is not None:
                return hit
            begun = time.monotonic()
            value = compute()
            with self._guard:
                # Aged from when the queries started: the figures are at least that old.
                self._values[key] = (value, begun)
                self._values.move_to_end(key)
                while len(self._values) > self.max_entries:
                    old, _ = self._values.popitem(last=False)
                    self._locks.pop(old, None)
            return value, 0.0
