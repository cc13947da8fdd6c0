"""Opt-in changes to the archive tables (owned by other services): run only on request,
each printing the DDL it runs. Nothing else in the service alters those tables."""

from __future__ import annotations

from sqlalchemy import Engine

from admin_service.config import Settings
from admin_service.live.log import CHANGES_CHANNEL

TRIGGER_NAME = "admin_service_notify_job_change"


def notify_trigger_ddl(settings: Settings) -> str:
    schema = settings.admin_schema
    # Statement-level and payload-less: one cheap NOTIFY per writing statement (PostgreSQL
    # folds identical notifications in a transaction); capture then reads what changed.
    return f"""
CREATE OR REPLACE FUNCTION "{schema}".{TRIGGER_NAME}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANGES_CHANNEL}', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON archive.analysis_jobs;
CREATE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE ON archive.analysis_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".{TRIGGER_NAME}();
""".strip()


def drop_notify_trigger_ddl(settings: Settings) -> str:
    return (
        f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON archive.analysis_jobs;\n"
        f'DROP FUNCTION IF EXISTS "{settings.admin_schema}".{TRIGGER_NAME}();'
    )


def run_ddl(engine: Engine, ddl: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
