"""The archive and auth tables this service reads (owned by other services)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Numeric, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()
ARCHIVE = "archive"  # the schema of the platform's job archive

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("username", String(100)),
    Column("email", String(255)),
    Column("user_type", String(20)),
    Column("is_active", Boolean),
    schema="auth",
)

jobs = Table(
    "analysis_jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("job_id", String(255)),
    Column("user_id", UUID(as_uuid=True)),
    Column("status", String(50)),
    Column("result_id", UUID(as_uuid=True)),
    Column("error_message", Text),
    Column("completed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("assessment_name", String(255)),
    Column("priority", Integer),
    Column("retry_count", Integer),
    Column("max_retries", Integer),
    Column("processing_started_at", DateTime(timezone=True)),
    schema=ARCHIVE,
)

system_metrics = Table(
    "system_metrics",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("metric_name", String(100)),
    Column("metric_value", Numeric),
    Column("metric_data", JSONB),
    Column("recorded_at", DateTime(timezone=False)),
    schema=ARCHIVE,
)

# The columns of a job row as the API returns them, in table order.
JOB_COLUMNS = tuple(c.name for c in jobs.columns)


def qualified(table: Table) -> str:
    return f"{table.schema}.{table.name}"


# Names for the SQL written by hand (hand-tuned statistics, DDL, psycopg2 loops): one source.
JOBS_TABLE = qualified(jobs)
METRICS_TABLE = qualified(system_metrics)
USERS_TABLE = qualified(users)
# Its columns differ between deployments' layouts: read with SELECT *, so it has no Table here.
RESULTS_TABLE = f"{ARCHIVE}.analysis_results"
