"""The live components of one process: event log, hub, event-log tail, capture candidate, action
dispatch and notification dispatcher candidates, stats publisher (while this process leads
capture) and ticker; the open connections' re-check (revocation.py) and per-user caps (caps.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from admin_service import metrics
from admin_service.actions.dispatcher import Dispatcher as ActionDispatcher
from admin_service.auth import Authenticator
from admin_service.config import Settings
from admin_service.db.dbapi import Connection
from admin_service.jobs.days import Maintainer
from admin_service.jobs.stats import LEADER, WANTED_CHANNEL, SharedStats
from admin_service.live.caps import ConnectionCaps
from admin_service.live.capture import LEADER_RETRY_S, Capturer, lock_key
from admin_service.live.connection import connect, wait_for_notify
from admin_service.live.hub import CloseReason, Hub, LiveEvent
from admin_service.live.log import EventLog
from admin_service.live.notify.dispatcher import Dispatcher as NotifyDispatcher
from admin_service.live.revocation import OpenConnections
from admin_service.live.tail import EventTail
from admin_service.names import JOB_STATS
from admin_service.triage.rollup import FailureRollup

log = logging.getLogger("admin_service.live")
# How often the closed days' loop looks for days to rebuild.
ROLLUP_TICK_S = 2.0


class LiveRuntime:
    def __init__(self, settings: Settings, engine: Engine, stats: SharedStats, authenticator: Authenticator) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = stats
        # The maintained counts are kept while some process holds capture's lock.
        stats.leader_lock = lock_key(settings.admin_schema)
        database_url = engine.url.render_as_string(hide_password=False)
        self.database_url = database_url
        self.event_log = EventLog(settings.admin_schema)
        self.hub = Hub(settings.subscriber_queue_max)
        self.tail = EventTail(settings, database_url, self.hub, self.event_log)
        self.capturer = Capturer(settings, database_url, self.event_log)
        self.action_dispatcher = ActionDispatcher(settings, database_url, self.event_log)
        # Every open SSE stream and Socket.IO socket, re-checked against its user.
        self.connections = OpenConnections(authenticator, settings.auth_cache_seconds)
        self.caps = ConnectionCaps(engine, settings.admin_schema)
        self.notify_dispatcher = NotifyDispatcher(settings, database_url)
        self.failure_rollup = FailureRollup(settings.admin_schema)
        self.rollup_maintainer = Maintainer(
            self.failure_rollup.days,
            [self.failure_rollup.rebuild_day],
            engine,
            settings.tz,
            settings.closed_days,
            settings.closed_days_reconcile_s,
            settings.db_statement_timeout_ms,
        )
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
            loops.append(("publish-stats", self._publish_stats))
            if self.settings.closed_days:
                loops.append(("closed-days", self._maintain_closed_days))
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

    def _publish_stats(self, stop: threading.Event) -> None:
        """While this process leads capture: the deployment's figures, once per interval while
        anyone wants them (stats_snapshot.wanted_until), published for every worker.

        The capture leader's process, because it keeps the counts per status: one election, and
        the figures move with it. Its own thread and connections, because the figures' queries
        must not hold back capture (nor capture the figures). Two processes may both publish for
        a moment while leadership moves: harmless, each publishes correct figures."""
        while not stop.is_set():
            if not self.capturer.is_leader:
                stop.wait(LEADER_RETRY_S / 2)
                continue
            conn: Connection | None = None
            try:
                conn = connect(self.settings, self.database_url, "admin-service-stats")
                self._publish_session(conn)
            except Exception as exc:  # a database outage: the loop must outlive it
                log.warning("stats publisher failed, retrying: %s", type(exc).__name__)
                stop.wait(LEADER_RETRY_S)
            finally:
                if conn is not None:
                    conn.close()

    def _maintain_closed_days(self, stop: threading.Event) -> None:
        """While this process leads capture (whose transactions mark the days to rebuild)."""
        self.rollup_maintainer.run(stop, lambda: self.capturer.is_leader, ROLLUP_TICK_S, lambda: datetime.now(UTC))

    def _publish_session(self, conn: Connection) -> None:
        """Until `stop` or this process no longer leads capture."""
        interval = self.settings.job_stats_interval_ms / 1000
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{WANTED_CHANNEL}"')
        due = 0.0
        while not self.stop.is_set() and self.capturer.is_leader:
            with conn.cursor() as cur:
                wanted = self.stats.snapshots.wanted(cur)
            if wanted and time.monotonic() >= due:
                started = time.monotonic()
                figures = self.stats.compute(LEADER)
                self.stats.snapshots.publish(self.engine, figures, time.monotonic() - started)
                due = started + interval
            # Woken early by a worker that finds the deployment idle and wants figures.
            wait_for_notify(conn, max(0.01, min(1.0, due - time.monotonic())) if wanted else 1.0)

    def _tick_stats(self, stop: threading.Event) -> None:
        """job-stats for everyone, each figures once, and only while someone listens; the hub's
        subscriber gauge is sampled on the same beat. The figures are the deployment's
        (SharedStats.get: fetched at most once per interval), so every worker of every instance
        sends the same ones."""
        interval = self.settings.job_stats_interval_ms / 1000
        # A tenth of the interval: a new figure reaches listeners soon after it is published.
        beat = interval / 10
        sent: object = None
        next_gauge = 0.0
        while not stop.wait(beat):
            if time.monotonic() >= next_gauge:
                metrics.LIVE_SUBSCRIBERS.set(len(self.hub.subscribers()))
                next_gauge = time.monotonic() + interval
            if not self.hub.wants(JOB_STATS):
                continue
            try:
                data, _ = self.stats.get()
            except Exception as exc:  # the ticker must survive a database outage
                log.warning("stats tick failed: %s", type(exc).__name__)
                stop.wait(interval)
                continue
            # Each publication once (a worker may read the same one again: the same figures).
            stamp = (data.get("computedAt"), (data.get("computedBy") or {}).get("process"))
            if stamp != sent:
                self.hub.publish(LiveEvent(JOB_STATS, data))
                sent = stamp
