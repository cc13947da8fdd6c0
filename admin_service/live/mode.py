"""The capture mode, as /health/ready and /metrics report it: read from the database, because the
worker answering may not be the capture leader (which can be in another process or instance).

- `notify-trigger`: the opt-in NOTIFY trigger (db install-notify-trigger) is on the jobs table:
  polling, woken at once by every change; still state sampling.
- `poll`: nothing installed; state sampling every CAPTURE_POLL_MS (live/polling.py).
- `exact` (the change-capture trigger, when installed and chosen) is reported here as well.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from admin_service.db.archive_options import TRIGGER_NAME
from admin_service.db.tables import JOBS_TABLE
from admin_service.names import CAPTURE_NOTIFY_TRIGGER, CAPTURE_POLL

# One catalog lookup (it also proves the database answers, so /health/ready needs no other).
NOTIFY_TRIGGER_INSTALLED = text(
    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(:jobs) AND tgname = :name AND tgenabled <> 'D')"
)


def capture_mode(conn: Connection) -> str:
    notify = bool(conn.execute(NOTIFY_TRIGGER_INSTALLED, {"jobs": JOBS_TABLE, "name": TRIGGER_NAME}).scalar())
    return CAPTURE_NOTIFY_TRIGGER if notify else CAPTURE_POLL


def read_capture_mode(engine: Engine) -> str:
    """The mode, on a pooled connection of its own (a metrics scrape)."""
    with engine.connect() as conn:
        return capture_mode(conn)
