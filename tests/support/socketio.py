"""The Socket.IO tests' settings, the job writes they watch for, and `Probe` (python-socketio's client
recording what it receives)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import socketio

from tests.support.factories import Data, utcnow

PATH = "/admin/socket.io"
MAX_PER_USER = 5
ALERT_QUEUE_MAX = 2
ENV = {
    "CAPTURE_POLL_MS": "100",
    "TAIL_POLL_MS": "200",
    "JOB_STATS_INTERVAL_MS": "500",
    "ALERT_INTERVAL_S": "0.5",
    "ALERT_QUEUE_MAX": str(ALERT_QUEUE_MAX),
    "SOCKETIO_MAX_CONNECTIONS_PER_USER": str(MAX_PER_USER),
    "SOCKETIO_EVENTS_PER_SECOND": "10",
    "ALLOWED_ORIGINS": "http://localhost:3000",
    "DB_STATEMENT_TIMEOUT_MS": "2000",
    "LOG_LEVEL": "WARNING",
}


def change_status(data: Data, job: dict[str, Any], status: str) -> None:
    """What a job writer does: update the row and its updated_at, and commit."""
    data.execute("UPDATE archive.analysis_jobs SET status = :s, updated_at = now() WHERE id = :id", s=status, id=job["id"])


def fresh_job(data: Data, **fields: Any) -> dict[str, Any]:
    now = utcnow()
    return data.job(created_at=now, updated_at=now, **fields)


def is_job(job: dict[str, Any], status: str) -> Callable[[Any], bool]:
    """A job-update about this job in this status. (Capture may first log the insert itself as
    "created", if it read the row before the status change.)"""

    def check(update: Any) -> bool:
        return update["job"]["id"] == job["id"] and update["job"]["status"] == status

    return check


@dataclass
class Received:
    name: str
    data: Any
    at: float  # time.monotonic()


class Probe:
    """A python-socketio client that records what it receives and waits for it with deadlines."""

    def __init__(self, url: str, **client_options: Any) -> None:
        self.url = url
        self.sio = socketio.Client(reconnection=False, request_timeout=5, **client_options)
        self.events: list[Received] = []
        self.refusal: Any = None
        self.disconnected = threading.Event()
        self._cond = threading.Condition()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._refused)
        self.sio.on("disconnect", self._on_disconnect)

    def _record(self, name: str, *args: Any) -> None:
        with self._cond:
            self.events.append(Received(name, args[0] if args else None, time.monotonic()))
            self._cond.notify_all()

    def _refused(self, data: Any = None) -> None:
        self.refusal = data

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    def connect(
        self,
        token: str | None,
        *,
        transports: list[str] | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        use_auth: bool = True,
    ) -> Probe:
        self.sio.connect(
            self.url + query,
            auth={"token": token} if use_auth and token is not None else None,
            transports=transports,
            socketio_path=PATH,
            headers=headers or {},
            wait_timeout=10,
        )
        return self

    def refused_with(self, token: str | None, **kwargs: Any) -> str:
        """Connect, expect a refusal, and return its message (what a dashboard shows)."""
        with pytest.raises(socketio.exceptions.ConnectionError):
            self.connect(token, **kwargs)
        assert isinstance(self.refusal, dict), f"no connect_error payload: {self.refusal!r}"
        assert not self.sio.connected
        return self.refusal["message"]

    def matching(self, name: str, where: Callable[[Any], bool] = lambda _: True, since: int = 0) -> list[Any]:
        with self._cond:
            return [e.data for e in self.events[since:] if e.name == name and where(e.data)]

    def wait_for(self, name: str, where: Callable[[Any], bool] = lambda _: True, *, since: int = 0, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event.name == name and where(event.data):
                        return event.data
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.name, json.dumps(e.data)[:200]) for e in self.events[since:]]
                    raise AssertionError(f"no matching {name!r} within {timeout}s; received: {seen}")
                self._cond.wait(left)

    def mark(self) -> int:
        """A position in the received events: wait_for(since=mark) ignores what came before."""
        with self._cond:
            return len(self.events)

    def wait_count(self, name: str, count: int, *, since: int = 0, timeout: float = 10) -> list[Any]:
        """At least `count` events of this name (after `since`), all of them."""
        self.wait_for(name, lambda _: len(self.matching(name, since=since)) >= count, since=since, timeout=timeout)
        return self.matching(name, since=since)

    def call(self, event: str, payload: Any = None) -> Any:
        """Emit with an ack callback and return the ack (None payload: no argument)."""
        return self.sio.call(event, payload, timeout=5)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
