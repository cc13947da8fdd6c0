"""The per-process hub: fans events out to local subscribers through bounded queues.

A subscriber that cannot keep up (its queue is full) is dropped, never waited for, so one
slow client never delays the others. Publishing never touches the database.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from admin_service import metrics

log = logging.getLogger("admin_service.live")

JOB_UPDATE = "job-update"
JOB_ALERT = "job-alert"
JOB_STATS = "job-stats"
EVENT_NAMES = (JOB_STATS, JOB_UPDATE, JOB_ALERT)


@dataclass(frozen=True)
class LiveEvent:
    name: str
    data: dict[str, Any]
    id: int | None = None  # the event log id; None for job-stats (not stored)

    def json(self) -> str:
        from admin_service.web import IsoJSONProvider

        return json.dumps(self.data, separators=(",", ":"), default=IsoJSONProvider.default)

    def json_ready(self) -> dict[str, Any]:
        """The data with dates and ids as JSON strings (stats hold datetime objects)."""
        return json.loads(self.json())


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


# Put in a subscriber's queue to wake it when it must stop.
STOP = LiveEvent("stop", {})


@dataclass(eq=False)
class Subscriber:
    filter: EventFilter
    queue: queue.Queue[LiveEvent] = field(repr=False)
    closed_reason: str | None = None
    # False for a transport's shared subscriber: its own `demand` callback speaks for it.
    counts_for_demand: bool = True
    # Called once when closed (by the publisher's thread): lets a transport free a stuck client.
    on_close: Callable[[Subscriber], None] | None = field(default=None, repr=False)

    def get(self, timeout: float) -> LiveEvent | None:
        """The next event, None on timeout, STOP when the subscriber was closed."""
        if self.closed_reason is not None:
            return STOP
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        # Make room for the wake-up even if the queue is full (that is why we drop it).
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(STOP)
        if self.on_close is not None:
            self.on_close(self)


class Hub:
    def __init__(self, queue_max: int = 1000) -> None:
        self.queue_max = queue_max
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self.dropped_total = 0
        self.published_total = 0
        self.last_event_id = 0  # newest log id published here
        # Transports that fan out themselves (Socket.IO rooms) say here whether they want an event.
        self.demand: list[Callable[[str], bool]] = []

    def subscribe(self, event_filter: EventFilter | None = None, queue_max: int | None = None) -> Subscriber:
        sub = Subscriber(event_filter or EventFilter(), queue.Queue(maxsize=queue_max or self.queue_max))
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def subscribers(self) -> list[Subscriber]:
        with self._lock:
            return list(self._subscribers)

    def wants(self, name: str) -> bool:
        if any(want(name) for want in self.demand):
            return True
        return any(name in s.filter.events for s in self.subscribers() if s.counts_for_demand)

    def publish(self, event: LiveEvent) -> None:
        if event.id is not None:
            self.last_event_id = max(self.last_event_id, event.id)
        self.published_total += 1
        metrics.EVENTS_PUBLISHED.labels(event.name).inc()
        for sub in self.subscribers():
            if sub.closed_reason is not None or not sub.filter.accepts(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                # Under gevent a subscriber only drains its queue when the publisher yields:
                # give it one turn first, or a burst longer than the queue (one tail read
                # returns up to 1000 events) would drop every subscriber, fast ones too.
                time.sleep(0)
                try:
                    sub.queue.put_nowait(event)
                except queue.Full:
                    self.dropped_total += 1
                    metrics.SUBSCRIBERS_DROPPED.inc()
                    log.warning("dropped a slow subscriber: its queue of %d events is full", sub.queue.maxsize)
                    sub.close("slow-consumer")
                    self.unsubscribe(sub)

    def close_all(self, reason: str) -> None:
        for sub in self.subscribers():
            sub.close(reason)
            self.unsubscribe(sub)
