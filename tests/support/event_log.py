"""The service's own state in the database: the event log, capture's progress, alert episodes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from admin_service.config import Settings

EVENT_TABLES = ("job_events", "capture_state", "alert_state", "job_changes", "alert_deliveries", "alert_episodes")


def reset_event_log(engine: Engine, settings: Settings) -> None:
    """The event log and alert episodes are the service's state: start each service from none."""
    # No RESTART IDENTITY: a running service's tail remembers the last id it published.
    tables = ", ".join(f'"{settings.admin_schema}".{t}' for t in EVENT_TABLES)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables}")


def logged_events(engine: Engine, settings: Settings, after: int = 0) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f'SELECT id, kind, job_row_id::text, payload FROM "{settings.admin_schema}".job_events WHERE id > %(a)s ORDER BY id',
            {"a": after},
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]
