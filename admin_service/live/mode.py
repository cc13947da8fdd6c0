"""The capture mode, as /health/ready and /metrics report it: read from the database, because the
worker answering may not be the capture leader (which can be in another process or instance).

- `notify-trigger`: the opt-in NOTIFY trigger (db install-notify-trigger) is on the jobs table:
  polling, woken at once by every change; still state sampling.
- `poll`: nothing installed; state sampling every CAPTURE_POLL_MS (live/polling.py).
- `exact`: the leader logs every change (live/changes.py): the change-capture triggers
  (db install-change-capture) are on the jobs table and it has switched to them.

While a leader holds capture's lock this is the mode it runs in (capture_state.mode, which it
writes when it switches, after its last sampling pass), not merely what is installed: right after
`db install-change-capture` the leader may still be sampling, and a probe that said `exact` then
would promise every transition of changes that a sampling pass can still merge. Without a leader
it is the mode one would run in (CAPTURE_MODE=auto), from the installed triggers.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from admin_service.db.archive_options import CHANGE_TRIGGERS, TRIGGER_NAME
from admin_service.db.tables import JOBS_TABLE
from admin_service.jobs.stats import LED
from admin_service.live.capture import lock_key
from admin_service.names import CAPTURE_EXACT, CAPTURE_NOTIFY_TRIGGER, CAPTURE_POLL


def _query(schema: str) -> str:
    # One statement (it also proves the database answers, so /health/ready needs no other).
    return f"""
        SELECT count(*) FILTER (WHERE tgname = :notify) AS notify,
               count(*) FILTER (WHERE tgname = ANY(:changes)) AS changes,
               (SELECT s.mode FROM "{schema}".capture_state s WHERE s.id = 1 AND {LED}) AS leading
        FROM pg_trigger WHERE tgrelid = to_regclass(:jobs) AND tgenabled <> 'D'
    """


def capture_mode(conn: Connection, schema: str) -> str:
    notify, changes, leading = conn.execute(
        text(_query(schema)),
        {"jobs": JOBS_TABLE, "notify": TRIGGER_NAME, "changes": list(CHANGE_TRIGGERS), "key": lock_key(schema)},
    ).one()
    exact = leading == CAPTURE_EXACT if leading is not None else changes == len(CHANGE_TRIGGERS)
    if exact:
        return CAPTURE_EXACT
    return CAPTURE_NOTIFY_TRIGGER if notify else CAPTURE_POLL


def read_capture_mode(engine: Engine, schema: str) -> str:
    """The mode, on a pooled connection of its own (a metrics scrape)."""
    with engine.connect() as conn:
        return capture_mode(conn, schema)
