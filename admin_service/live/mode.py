"""The capture mode, as /health/ready and /metrics report it: read from the database, because the
worker answering may not be the capture leader (which can be in another process or instance).

- `notify-trigger`: the opt-in NOTIFY trigger (db install-notify-trigger) is on the jobs table:
  polling, woken at once by every change; still state sampling.
- `poll`: nothing installed; state sampling every CAPTURE_POLL_MS (live/polling.py).
- `exact`: the change-capture triggers (db install-change-capture) are on the jobs table, so the
  leader (CAPTURE_MODE=auto, the default) logs every change (live/changes.py).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from admin_service.db.archive_options import CHANGE_TRIGGERS, TRIGGER_NAME
from admin_service.db.tables import JOBS_TABLE
from admin_service.names import CAPTURE_EXACT, CAPTURE_NOTIFY_TRIGGER, CAPTURE_POLL

# One catalog lookup (it also proves the database answers, so /health/ready needs no other).
INSTALLED_TRIGGERS = text(
    "SELECT count(*) FILTER (WHERE tgname = :notify), count(*) FILTER (WHERE tgname = ANY(:changes)) "
    "FROM pg_trigger WHERE tgrelid = to_regclass(:jobs) AND tgenabled <> 'D'"
)


def capture_mode(conn: Connection) -> str:
    notify, changes = conn.execute(
        INSTALLED_TRIGGERS, {"jobs": JOBS_TABLE, "notify": TRIGGER_NAME, "changes": list(CHANGE_TRIGGERS)}
    ).one()
    if changes == len(CHANGE_TRIGGERS):
        return CAPTURE_EXACT
    return CAPTURE_NOTIFY_TRIGGER if notify else CAPTURE_POLL


def read_capture_mode(engine: Engine) -> str:
    """The mode, on a pooled connection of its own (a metrics scrape)."""
    with engine.connect() as conn:
        return capture_mode(conn)
