"""The live components of one process: event log, hub, event-log tail, capture candidate, action
dispatch and notification dispatcher candidates, stats ticker; the open connections' re-check
(revocation.py) and per-user caps (caps.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from admin_service import metrics
from admin_service.actions.dispatcher import Dispatcher as ActionDispatcher
from admin_service.auth import Authenticator
from admin_service.config import Settings
from admin_service.jobs.stats import SharedStats
from admin_service.live.caps import ConnectionCaps
from admin_service.live.capture import Capturer
from admin_service.live.hub import CloseReason, Hub, LiveEvent
from admin_service.live.log import EventLog
from admin_service.live.notify.dispatcher import Dispatcher as NotifyDispatcher
from admin_service.live.revocation import OpenConnections
from admin_service.live.tail import EventTail
from admin_service.names import JOB_STATS

log = logging.getLogger("admin_service.live")


class LiveRuntime:
    def __init__(self, settings: Settings, engine: Engine, stats: SharedStats, authenticator: Authenticator) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = stats
        database_url = engine.url.render_as_string(hide_password=False)
        self.event_log = EventLog(settings.admin_schema)
        self.hub = Hub(settings.subscriber_queue_max)
        self.tail = EventTail(settings, database_url, self.hub, self.event_log)
        self.capturer = Capturer(settings, database_url, self.event_log)
        self.action_dispatcher = ActionDispatcher(settings, database_url, self.event_log)
        # Every open SSE stream and Socket.IO socket, re-checked against its user.
        self.connections = OpenConnections(authenticator, settings.auth_cache_seconds)
        self.caps = ConnectionCaps(engine, settings.admin_schema)
        self.notify_dispatcher = NotifyDispatcher(settings, database_url)
        self.stop = threading.Event()
        self.started = False
        self._threads: list[threading.Thread] = []

    def start(self, *, capture: bool = True) -> None:
        """Start the background loops (once per process, after gunicorn forked the worker)."""
        if self.started:
            return
        self.started = True
        loops: list[tuple[str, Callable[[threading.Event], None]]] = [
            ("tail", self.tail.run),
            ("stats", self._tick_stats),
            ("recheck", self.connections.run),
            ("lease", self.caps.run),
        ]
        if capture:
            # Capture, action dispatch and notifications: each elected among the same
            # candidates, with an advisory lock of its own.
            loops.append(("capture", self.capturer.run))
            loops.append(("dispatch", self.action_dispatcher.run))
            loops.append(("notify", self.notify_dispatcher.run))
        for name, target in loops:
            thread = threading.Thread(target=target, args=(self.stop,), name=f"live-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, reason: CloseReason = CloseReason.SHUTDOWN) -> None:
        """End every stream (clients reconnect elsewhere) and give up capture leadership."""
        self.stop.set()
        self.hub.close_all(reason)

    def wait_stopped(self, timeout: float) -> bool:
        """After shutdown: wait (at most `timeout` s in all) for the loops to end, so that a
        leader closes its connection (releasing the lock) and says so before the process exits;
        a worker exiting under a loop still in a query would leave that to the kernel. True when
        all ended."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _tick_stats(self, stop: threading.Event) -> None:
        """job-stats once per interval for everyone, and only while someone listens; the hub's
        subscriber gauge is sampled on the same beat."""
        interval = self.settings.job_stats_interval_ms / 1000
        while not stop.wait(interval):
            metrics.LIVE_SUBSCRIBERS.set(len(self.hub.subscribers()))
            if not self.hub.wants(JOB_STATS):
                continue
            try:
                data, _ = self.stats.get()
            except Exception as exc:  # the ticker must survive a database outage
                log.warning("stats tick failed: %s", type(exc).__name__)
                continue
            self.hub.publish(LiveEvent(JOB_STATS, data))
