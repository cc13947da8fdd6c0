"""The Socket.IO tests' settings and the job writes they watch for."""

from __future__ import annotations

from typing import Any

from tests.support.factories import Data, utcnow

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
