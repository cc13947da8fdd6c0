"""Rows for tests, written straight into the fixture tables over a real connection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

ARCHIVE_TABLES = ("archive.analysis_jobs", "archive.analysis_results", "archive.system_metrics", "auth.users")


# The columns of a job row, as the old service's clients read them: written out here, not taken
# from admin_service.db.tables, so a column dropped from the code fails the tests.
JOB_COLUMNS = (
    "id",
    "job_id",
    "user_id",
    "status",
    "result_id",
    "error_message",
    "completed_at",
    "created_at",
    "updated_at",
    "assessment_name",
    "priority",
    "retry_count",
    "max_retries",
    "processing_started_at",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Data:
    """Insert users, jobs, results and metrics; every method returns what it inserted."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._n = 0

    def clear(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(ARCHIVE_TABLES)}")
        # The failure rollup holds figures of the rows a TRUNCATE removed unseen by capture
        # (triage/rollup.py): the service's days go with them. A transaction of its own: with
        # both in one, its locks would be taken in the opposite order to capture's.
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "DO $$ BEGIN IF to_regclass('admin.closed_days') IS NOT NULL THEN DELETE FROM admin.closed_days; END IF; END $$"
            )

    def _next(self) -> int:
        self._n += 1
        return self._n

    def user(
        self,
        *,
        user_type: str = "user",
        is_active: bool = True,
        email: str | None = None,
        username: str | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        n = self._next()
        row = {
            "id": id or str(uuid.uuid4()),
            "email": email or f"person{n}-{uuid.uuid4().hex[:6]}@example.com",
            "username": username if username is not None else f"person{n}_{uuid.uuid4().hex[:6]}",
            "user_type": user_type,
            "is_active": is_active,
        }
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO auth.users (id, email, username, user_type, is_active) VALUES (:id, :email, :username, :user_type, :is_active)"
                ),
                row,
            )
        return row

    def job(
        self,
        *,
        user: dict[str, Any] | None = None,
        user_id: str | None = None,
        status: str = "queued",
        created_at: datetime | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        n = self._next()
        created = created_at or utcnow() - timedelta(minutes=n)
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "job_id": f"job-{n:06d}-{uuid.uuid4().hex[:8]}",
            "user_id": user_id or (user["id"] if user else str(uuid.uuid4())),
            "status": status,
            "result_id": None,
            "error_message": None,
            "completed_at": None,
            "created_at": created,
            "updated_at": created,
            "assessment_name": "AI-Driven Talent Mapping",
            "priority": 0,
            "retry_count": 0,
            "max_retries": 3,
            "processing_started_at": None,
        }
        row.update(fields)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO archive.analysis_jobs (" + ", ".join(row) + ") VALUES (" + ", ".join(f":{k}" for k in row) + ")"
                ),
                row,
            )
        return row

    def result(self, job: dict[str, Any], **columns: Any) -> dict[str, Any]:
        """A result row for a job, linked through the job's result_id."""
        import json

        row = {
            "id": str(uuid.uuid4()),
            "user_id": job["user_id"],
            "test_data": json.dumps({"questions": 3}),
            "test_result": json.dumps({"archetype": "The Analyst", "scores": {"openness": 71}}),
            "raw_responses": json.dumps({"answers": [1, 2, 3]}),
            "is_public": False,
        }
        row.update(columns)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO archive.analysis_results (id, user_id, test_data, test_result, raw_responses, is_public) "
                    "VALUES (:id, :user_id, CAST(:test_data AS jsonb), CAST(:test_result AS jsonb), CAST(:raw_responses AS jsonb), :is_public)"
                ),
                row,
            )
            conn.execute(text("UPDATE archive.analysis_jobs SET result_id = :r WHERE id = :j"), {"r": row["id"], "j": job["id"]})
        job["result_id"] = row["id"]
        return row

    def metric(self, name: str, value: float, recorded_at: datetime, data: dict[str, Any] | None = None) -> None:
        import json

        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO archive.system_metrics (metric_name, metric_value, metric_data, recorded_at) "
                    "VALUES (:n, :v, CAST(:d AS jsonb), :r)"
                ),
                {"n": name, "v": value, "d": json.dumps(data or {}), "r": recorded_at.astimezone(UTC).replace(tzinfo=None)},
            )

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)
