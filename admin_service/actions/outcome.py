"""An action's outcome read from the database, not from the send: capture calls this with the
job-update events of each pass, in that pass's transaction. An item whose send began becomes
`picked_up` when capture sees its job in any status but `failed`; each action that moved gets
one job-action event, logged right after the job updates that moved it."""

from __future__ import annotations

from collections.abc import Sequence

from admin_service.actions.store import ActionStore
from admin_service.db.dbapi import Cursor
from admin_service.live.log import NewEvent
from admin_service.names import JOB_UPDATE

PICKED_UP = "picked-up"


def pickup_events(cur: Cursor, schema: str, events: Sequence[NewEvent]) -> list[NewEvent]:
    left_failed = {
        e.job_row_id: e.status for e in events if e.event == JOB_UPDATE and e.job_row_id and e.status and e.status != "failed"
    }
    if not left_failed:
        return []
    store = ActionStore(schema)
    return store.progress_events(cur, store.record_pickups(cur, left_failed), PICKED_UP)
