"""Every worker tails the event log and publishes new events to its local hub.

Woken by the leader's NOTIFY, with polling as the fallback; after a lost connection it
resumes from the last id it published, so nothing is skipped. Its `position` (the newest
log id this process has published, or found at start) is where a new stream without
Last-Event-ID starts.
"""

from __future__ import annotations

import threading

from admin_service.config import Settings
from admin_service.db.dbapi import Connection
from admin_service.live.connection import keep_connected, wait_for_notify
from admin_service.live.hub import Hub
from admin_service.live.log import EVENTS_CHANNEL, READ_PAGE, EventLog

# After a lost connection (a database restart): a reconnect attempt per second and worker, so
# events flow again about a second after the database is back.
RETRY_S = 1.0


class EventTail:
    def __init__(self, settings: Settings, database_url: str, hub: Hub, event_log: EventLog) -> None:
        self.settings = settings
        self.database_url = database_url
        self.hub = hub
        self.log = event_log
        self.last_id: int | None = None
        self.ready = threading.Event()

    @property
    def position(self) -> int:
        """The newest log id published here (or logged before the tail started); 0 before it has read the log."""
        return self.last_id or 0

    def run(self, stop: threading.Event) -> None:
        keep_connected("tail", self.settings, self.database_url, stop, lambda conn: self._session(conn, stop), RETRY_S)

    def _session(self, conn: Connection, stop: threading.Event) -> None:
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{EVENTS_CHANNEL}"')
            if self.last_id is None:
                # Start from now: history is served by replay (Last-Event-ID), not by the tail.
                self.last_id = self.log.newest_id(cur)
        self.ready.set()
        self._follow(conn, stop)

    def _follow(self, conn: Connection, stop: threading.Event) -> None:
        poll_s = self.settings.tail_poll_ms / 1000
        while not stop.is_set():
            self.drain(conn)
            wait_for_notify(conn, poll_s)

    def drain(self, conn: Connection) -> int:
        published = 0
        while True:
            with conn.cursor() as cur:
                events = self.log.read_after(cur, self.last_id or 0)
            for event in events:
                self.hub.publish(event)
                self.last_id = event.id
                published += 1
            if len(events) < READ_PAGE:
                return published
