"""The per-process hub: fans events out to local subscribers through bounded queues.

A subscriber that cannot keep up (its queue is full) is dropped, never waited for, so one
slow client never delays the others. Publishing never touches the database. The hub only
routes events: how a transport puts one on the wire (live/stream.py for SSE, Socket.IO's
JSON) is the transport's business.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar, cast

from admin_service import metrics
from admin_service.names import EVENT_NAMES, JOB_UPDATE

log = logging.getLogger("admin_service.live")


@dataclass(frozen=True)
class LiveEvent:
    name: str
    data: dict[str, Any]
    id: int | None = None  # the event log id; None for job-stats (not stored)
    # Transports' encodings of this event (live/stream.py: the SSE message, its HTTP chunk),
    # filled on first use. Encoded once per event, not once per subscriber: with ten thousand
    # streams open the per-subscriber encoding was a large share of a fan-out. A slot on the
    # event rather than a cache in the transport: it lives exactly as long as the event, needs
    # no eviction and no lock, and costs one dict per event, none per subscriber.
    encoded: dict[str, bytes] = field(default_factory=dict, init=False, compare=False, repr=False)

    # (cached_property writes to __dict__, which a frozen dataclass allows.)
    @cached_property
    def json_text(self) -> str:
        from admin_service.web import json_bytes

        return json_bytes(self.data).decode()

    def json_ready(self) -> dict[str, Any]:
        """The data with dates and ids as JSON strings (stats hold datetime objects)."""
        return cast(dict[str, Any], json.loads(self.json_text))


@dataclass(frozen=True)
class EventFilter:
    """What one subscriber wants. Field filters apply to job-update events only."""

    events: frozenset[str] = frozenset(EVENT_NAMES)
    statuses: frozenset[str] = frozenset()
    assessment_name: str | None = None  # partial, case-insensitive
    user_id: str | None = None

    def accepts(self, event: LiveEvent) -> bool:
        if event.name not in self.events:
            return False
        if event.name != JOB_UPDATE:
            return True
        job = event.data.get("job") or {}
        if self.statuses and job.get("status") not in self.statuses:
            return False
        if self.assessment_name and self.assessment_name.lower() not in str(job.get("assessment_name") or "").lower():
            return False
        if self.user_id and str(job.get("user_id")) != self.user_id:
            return False
        return True


# What a closed subscriber's get() returns (compare with `is`).
STOP = LiveEvent("stop", {})


class CloseReason(StrEnum):
    """Why a subscriber (and the stream or socket behind it) ends."""

    SHUTDOWN = "shutdown"  # the process is stopping: reconnect elsewhere
    SLOW_CONSUMER = "slow-consumer"  # its queue was full: dropped
    EXPIRED = "expired"  # its token expired (a stream notices this itself)
    REVOKED = "revoked"  # its user is no longer an active admin (live/revocation.py)


class Subscriber:
    """One consumer's bounded inbox.

    A deque and an Event rather than queue.Queue: under gevent, Queue.put runs a Python-level
    Condition per call, which made the publisher's loop the largest cost of a fan-out to ten
    thousand streams; deque.append is atomic and Event.set wakes the one waiter. Works the
    same with plain threads (tests, the dev server).
    """

    def __init__(self, event_filter: EventFilter, maxsize: int) -> None:
        self.filter = event_filter
        self.maxsize = maxsize
        self._events: deque[LiveEvent] = deque()
        self._ready = threading.Event()
        self.closed_reason: CloseReason | None = None

    def __repr__(self) -> str:
        return f"Subscriber({self.filter!r}, queued={len(self._events)}, closed={self.closed_reason!r})"

    def offer(self, event: LiveEvent) -> bool:
        """Queue an event; False when the inbox is full."""
        if len(self._events) >= self.maxsize:
            return False
        self._events.append(event)
        self._ready.set()
        return True

    def get(self, timeout: float) -> LiveEvent | None:
        """The next event, None on timeout, STOP when the subscriber was closed."""
        deadline: float | None = None
        while True:
            if self.closed_reason is not None:
                return STOP
            try:
                return self._events.popleft()
            except IndexError:
                pass
            # Clear, then look again: an event offered in between has set the flag after us.
            self._ready.clear()
            if self._events:
                continue
            if deadline is None:
                deadline = time.monotonic() + timeout
            left = deadline - time.monotonic()
            if left <= 0 or not self._ready.wait(left):
                return None if self.closed_reason is None else STOP

    def get_nowait(self) -> LiveEvent | None:
        """The next queued event without waiting (None when there is none or when closed)."""
        if self.closed_reason is not None:
            return None
        try:
            return self._events.popleft()
        except IndexError:
            return None

    def close(self, reason: CloseReason) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._events.clear()
        self._ready.set()
        self.after_close()

    def after_close(self) -> None:
        """Called once when closed (often by the publisher's thread): lets a transport free a stuck client."""


SubscriberT = TypeVar("SubscriberT", bound=Subscriber)
# A publish lets other greenlets run after this many subscribers.
YIELD_EVERY = 500


class Hub:
    def __init__(self, queue_max: int = 1000) -> None:
        self.queue_max = queue_max
        # Subscribers grouped by their (hashable) filter: thousands of dashboards ask for the
        # same thing, so a publish decides once per distinct filter, not once per subscriber.
        self._groups: dict[EventFilter, set[Subscriber]] = {}
        self._snapshot: tuple[tuple[EventFilter, tuple[Subscriber, ...]], ...] | None = ()
        self._lock = threading.Lock()
        self.dropped_total = 0
        self.published_total = 0

    def subscribe(self, event_filter: EventFilter | None = None, queue_max: int | None = None) -> Subscriber:
        return self.attach(Subscriber(event_filter or EventFilter(), queue_max or self.queue_max))

    def attach(self, sub: SubscriberT) -> SubscriberT:
        """Start publishing to a subscriber built by a transport (a Subscriber subclass)."""
        with self._lock:
            self._groups.setdefault(sub.filter, set()).add(sub)
            self._snapshot = None
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            group = self._groups.get(sub.filter)
            if group is None or sub not in group:
                return
            group.discard(sub)
            if not group:
                del self._groups[sub.filter]
            self._snapshot = None

    def _current(self) -> tuple[tuple[EventFilter, tuple[Subscriber, ...]], ...]:
        """The subscribers as of now; rebuilt only after a change (not on every publish)."""
        with self._lock:
            if self._snapshot is None:
                self._snapshot = tuple((f, tuple(subs)) for f, subs in self._groups.items())
            return self._snapshot

    def subscribers(self) -> list[Subscriber]:
        return [sub for _, subs in self._current() for sub in subs]

    def wants(self, name: str) -> bool:
        """Whether some subscriber's filter asks for these events (a group is never empty)."""
        return any(name in f.events for f, _ in self._current())

    def publish(self, event: LiveEvent) -> None:
        self.published_total += 1
        metrics.EVENTS_PUBLISHED.labels(metrics.bounded(event.name, EVENT_NAMES)).inc()
        offered = 0
        for event_filter, subs in self._current():
            if not event_filter.accepts(event):
                continue
            for sub in subs:
                if sub.closed_reason is None and not sub.offer(event):
                    self._overflow(sub, event)
                offered += 1
                if offered % YIELD_EVERY == 0:
                    # Under gevent this loop holds the worker (an SSE stream's offer is a
                    # socket write): let requests in between, not after 10,000 writes. A
                    # timed sleep, because sleep(0) runs ready greenlets without polling I/O.
                    time.sleep(0.0001)

    def _overflow(self, sub: Subscriber, event: LiveEvent) -> None:
        # Under gevent a subscriber only drains its queue when the publisher yields: give it
        # one turn first, or a burst longer than the queue (one tail read returns up to 1000
        # events) would drop every subscriber, fast ones too.
        time.sleep(0)
        if sub.closed_reason is None and not sub.offer(event):
            self.dropped_total += 1
            metrics.SUBSCRIBERS_DROPPED.inc()
            log.warning("dropped a slow subscriber: its queue of %d events is full", sub.maxsize)
            sub.close(CloseReason.SLOW_CONSUMER)
            self.unsubscribe(sub)

    def close_all(self, reason: CloseReason) -> None:
        for sub in self.subscribers():
            sub.close(reason)
            self.unsubscribe(sub)
