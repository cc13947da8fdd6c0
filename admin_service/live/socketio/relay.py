"""Hub events to Socket.IO rooms: one hub subscription per process for every socket.

No socket adds database work or a hub subscriber of its own. job-stats come through a second
subscription, held only while some socket is subscribed to jobs: the stats ticker computes
figures only while a hub filter asks for job-stats, SSE streams and sockets alike.
"""

from __future__ import annotations

import logging
import threading

from admin_service.live.hub import STOP, EventFilter, Hub, LiveEvent, Subscriber
from admin_service.live.socketio.filters import ALERTS_ROOM, JobRooms
from admin_service.live.socketio.server import GuardedServer
from admin_service.names import ALERT_NEW, ALERT_UPDATE, JOB_ACTION, JOB_ALERT, JOB_STATS, JOB_UPDATE

log = logging.getLogger("admin_service.socketio")

UPDATES_AND_ALERTS = EventFilter(events=frozenset({JOB_UPDATE, JOB_ALERT, JOB_ACTION, ALERT_NEW, ALERT_UPDATE}))
STATS = EventFilter(events=frozenset({JOB_STATS}))
QUEUE_MAX = 100_000  # events: the relay's inbox is every socket's


class Relay:
    def __init__(self, server: GuardedServer, hub: Hub, stop: threading.Event, rooms: JobRooms) -> None:
        self.server = server
        self.hub = hub
        self.stop = stop
        self.rooms = rooms
        self._stats_feed: Subscriber | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        updates = self.hub.subscribe(UPDATES_AND_ALERTS, queue_max=QUEUE_MAX)
        self.server.start_background_task(self._forward, updates, True)

    def rooms_changed(self) -> None:
        """Hold the job-stats subscription exactly while some socket is subscribed to jobs."""
        with self._lock:
            wanted = bool(self.rooms)
            if wanted and self._stats_feed is None:
                self._stats_feed = self.hub.subscribe(STATS, queue_max=QUEUE_MAX)
                self.server.start_background_task(self._forward, self._stats_feed, False)
            elif not wanted and self._stats_feed is not None:
                self.hub.unsubscribe(self._stats_feed)
                self._stats_feed = None  # its loop ends at its next wait

    def _forward(self, sub: Subscriber, announces_shutdown: bool) -> None:
        while not self.stop.is_set() and (announces_shutdown or sub is self._stats_feed):
            event = sub.get(1.0)
            if event is None:
                continue
            if event is STOP:
                if announces_shutdown:
                    self.server.emit("error", {"message": "Server shutting down; reconnect"})
                return
            try:
                self._dispatch(event)
            except Exception:  # one bad event must not end delivery for everyone
                log.exception("socket.io dispatch failed")

    def _dispatch(self, event: LiveEvent) -> None:
        if event.name == JOB_UPDATE:
            self.server.emit(JOB_UPDATE, event.data, to=self.rooms.accepting(event))
        elif event.name in (JOB_ALERT, ALERT_NEW, ALERT_UPDATE):
            self.server.emit(event.name, event.data, to=ALERTS_ROOM)
        elif event.name == JOB_ACTION:
            # Every socket subscribed to jobs, whatever its filter: an action spans many jobs.
            self.server.emit(JOB_ACTION, event.data, to=self.rooms.every_room())
        elif event.name == JOB_STATS:
            self.server.emit(JOB_STATS, event.json_ready(), to=self.rooms.every_room())
