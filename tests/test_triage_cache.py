"""The sharing of failures and trends answers (admin_service/triage/cache.py), on a clock the
test moves: one computation per key and interval, concurrent callers wait for that one, a key
in use is recomputed in the background before it expires, fresh recomputes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from admin_service.triage.cache import IntervalCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter() -> tuple[list[int], Any]:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    return calls, compute


def test_one_computation_per_interval_then_recomputed() -> None:
    clock = Clock()
    cache: IntervalCache[int] = IntervalCache(1000, clock=clock)
    calls, compute = counter()
    assert cache.get("k", compute) == (1, 0.0)
    clock.now += 0.5
    assert cache.get("k", compute) == (1, pytest.approx(500.0))  # shared, and its age said
    clock.now += 0.6  # past the interval: the caller waits for a new computation
    assert cache.get("k", compute) == (2, 0.0)
    assert cache.get("other", compute) == (3, 0.0)  # keys are separate
    assert len(calls) == 3


def test_a_key_in_use_is_refreshed_in_the_background_before_it_expires() -> None:
    clock = Clock()
    cache: IntervalCache[int] = IntervalCache(1000, clock=clock)
    calls, compute = counter()
    cache.get("k", compute)
    clock.now += 0.85  # past REFRESH_AHEAD of the interval, not past it
    value, age = cache.get("k", compute)
    assert (value, age) == (1, pytest.approx(850.0))  # answered at once with the figures it has
    for thread in [t for t in threading.enumerate() if t.name == "triage-refresh"]:
        thread.join(timeout=30)
    assert len(calls) == 2
    assert cache.get("k", compute) == (2, 0.0)  # the refreshed figures, aged from their computation


def test_fresh_recomputes_and_concurrent_callers_share_one_computation() -> None:
    clock = Clock()
    cache: IntervalCache[int] = IntervalCache(1000, clock=clock)
    release = threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        release.wait(30)
        return len(calls)

    results: list[tuple[int, float]] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(5)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(calls) == 1 and [v for v, _ in results] == [1] * 5
    clock.now += 0.1
    assert cache.get("k", slow, fresh=True) == (2, 0.0)


def test_at_most_max_entries_are_kept() -> None:
    clock = Clock()
    cache: IntervalCache[int] = IntervalCache(1000, max_entries=2, clock=clock)
    calls, compute = counter()
    for key in ("a", "b", "c"):
        cache.get(key, compute)
    assert cache.get("a", compute) == (4, 0.0)  # "a" was dropped, the least recently used
    assert cache.get("c", compute) == (3, 0.0)
