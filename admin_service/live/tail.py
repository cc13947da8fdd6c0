"""Every worker tails the event log and publishes new events to its local hub.

Woken by the leader's NOTIFY, with polling as the fallback; after a lost connection it
resumes from the last id it published, so nothing is skipped.
"""

from __future__ import annotations

import threading
from typing import Any

from admin_service.config import Settings
from admin_service.live.connection import keep_connected, wait_for_notify
from admin_service.live.hub import Hub, LiveEvent
from admin_service.live.log import EVENTS_CHANNEL, read_after

# After a lost connection (a database restart): a reconnect attempt per second and worker, so
# events flow again about a second after the database is back.
RETRY_S = 1.0


class EventTail:
    def __init__(self, settings: Settings, database_url: str, hub: Hub) -> None:
        self.settings = settings
        self.database_url = database_url
        self.hub = hub
        self.last_id: int | None = None
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        keep_connected("tail", self.settings, self.database_url, stop, lambda conn: self._session(conn, stop), RETRY_S)

    def _session(self, conn: Any, stop: threading.Event) -> None:
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{EVENTS_CHANNEL}"')
            if self.last_id is None:
                # Start from now: history is served by replay (Last-Event-ID), not by the tail.
                cur.execute(f'SELECT COALESCE(max(id), 0) FROM "{self.settings.admin_schema}".job_events')
                self.last_id = int(cur.fetchone()[0])
                self.hub.last_event_id = self.last_id
        self.ready.set()
        self._follow(conn, stop)

    def _follow(self, conn: Any, stop: threading.Event) -> None:
        poll_s = self.settings.tail_poll_ms / 1000
        while not stop.is_set():
            self.drain(conn)
            wait_for_notify(conn, poll_s)

    def drain(self, conn: Any) -> int:
        published = 0
        while True:
            with conn.cursor() as cur:
                rows = read_after(cur, self.settings.admin_schema, self.last_id or 0)
            for event_id, name, payload in rows:
                self.hub.publish(LiveEvent(name, payload, event_id))
                self.last_id = event_id
                published += 1
            if len(rows) < 1000:
                return published
