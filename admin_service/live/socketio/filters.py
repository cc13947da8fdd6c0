"""Job subscriptions as Socket.IO rooms: `jobs` for every update, one room per distinct filter.

Thousands of dashboards ask for the same few filters, so an update is matched once per filter
(not once per socket) and python-socketio's manager sends it to every socket of the matching
rooms, encoding the packet once.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from admin_service.jobs.schemas import text_problem
from admin_service.jobs.status import parse_status
from admin_service.live.hub import EventFilter, LiveEvent
from admin_service.names import JOB_UPDATE

JOBS_ROOM = "jobs"  # every job-update
ALERTS_ROOM = "alerts"


def filter_from(payload: Any) -> EventFilter | None:
    """An optional {status, assessment_name} filter; None when none given. Raises ValueError."""
    if payload is None or payload == {}:
        return None
    if not isinstance(payload, dict):
        raise ValueError("filter must be an object like {status: 'failed', assessment_name: 'IQ'}")
    unknown = set(payload) - {"status", "assessment_name"}
    if unknown:
        raise ValueError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
    statuses: set[str] = set()
    raw = payload.get("status")
    if raw is not None:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        for item in items:
            statuses.add(parse_status(str(item)))  # UnknownStatus is a ValueError
    name = payload.get("assessment_name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 255):
        raise ValueError("assessment_name must be a string of 1-255 characters")
    # The same text rules as the REST filter of the same name (a lone surrogate, NUL).
    problem = text_problem(name) if name is not None else None
    if problem is not None:
        raise ValueError(f"assessment_name: {problem}")
    return EventFilter(events=frozenset({JOB_UPDATE}), statuses=frozenset(statuses), assessment_name=name)


def room_for(event_filter: EventFilter | None) -> str:
    """The room of the sockets with this filter: its canonical form, so equal filters share it."""
    if event_filter is None:
        return JOBS_ROOM
    key = {"status": sorted(event_filter.statuses), "assessment_name": event_filter.assessment_name}
    return "jobs:" + json.dumps(key, sort_keys=True, separators=(",", ":"))


class JobRooms:
    """Which job room each subscribed socket is in, and the filter behind each filtered room.

    python-socketio's manager holds the rooms' members; this holds what it cannot: a filter per
    room, dropped with the room's last member.
    """

    def __init__(self) -> None:
        self._room_of: dict[str, str] = {}  # sid -> its job room
        self._filters: dict[str, tuple[EventFilter, int]] = {}  # filtered room -> (filter, members)
        self._lock = threading.Lock()

    def join(self, sid: str, event_filter: EventFilter | None) -> tuple[str | None, str]:
        """Move a socket to the room of this filter: (the room it leaves, if any; the room it enters)."""
        room = room_for(event_filter)
        with self._lock:
            left = self._forget(sid)
            self._room_of[sid] = room
            if event_filter is not None:
                _, members = self._filters.get(room, (event_filter, 0))
                self._filters[room] = (event_filter, members + 1)
        return left, room

    def leave(self, sid: str) -> str | None:
        """The room this socket leaves (None when it was not subscribed)."""
        with self._lock:
            return self._forget(sid)

    def _forget(self, sid: str) -> str | None:
        room = self._room_of.pop(sid, None)
        if room is not None and room in self._filters:
            event_filter, members = self._filters[room]
            if members > 1:
                self._filters[room] = (event_filter, members - 1)
            else:
                del self._filters[room]
        return room

    def __bool__(self) -> bool:
        """Whether any socket is subscribed to jobs."""
        return bool(self._room_of)

    # Both lists start with JOBS_ROOM: never empty, because an emit to no room goes to everyone.
    def accepting(self, event: LiveEvent) -> list[str]:
        """The rooms this job-update goes to."""
        return [JOBS_ROOM, *(room for room, (f, _) in list(self._filters.items()) if f.accepts(event))]

    def every_room(self) -> list[str]:
        """The rooms of every job subscriber, filtered or not (job-stats go to all)."""
        return [JOBS_ROOM, *list(self._filters)]
