"""Opt-in changes to the archive tables (owned by other services): run only on request,
each printing the DDL it runs. Nothing else in the service alters those tables."""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.tables import ARCHIVE, JOB_COLUMNS, JOBS_TABLE, METRICS_TABLE, USERS_TABLE, users
from admin_service.live.log import CHANGES_CHANNEL, MODE_CHANGED

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
DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {JOBS_TABLE};
CREATE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE ON {JOBS_TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".{TRIGGER_NAME}();
""".strip()


def drop_notify_trigger_ddl(settings: Settings) -> str:
    return (
        f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {JOBS_TABLE};\n"
        f'DROP FUNCTION IF EXISTS "{settings.admin_schema}".{TRIGGER_NAME}();'
    )


# Exact capture (live/changes.py): row triggers append every change of a job to our own
# schema's change table in the writer's transaction, and a statement trigger wakes capture.
CHANGE_FUNCTION = "admin_service_record_job_change"
CHANGE_TRIGGERS = ("admin_service_record_job_insert_delete", "admin_service_record_job_update")
WAKE_FUNCTION = "admin_service_wake_capture"


# At commit, tells the capture leader that the mode changed: it switches at once, before any
# writer's next change (it would otherwise sample rows for up to CAPTURE_MODE_CHECK_S, merging the
# transitions made meanwhile, while /health/ready already says exact).
MODE_NOTIFY = f"SELECT pg_notify('{CHANGES_CHANNEL}', '{MODE_CHANGED}');"


def asleep_lock_key(schema: str) -> int:
    """The advisory lock the exact-capture leader holds while it sleeps (live/changes.py)."""
    return zlib.crc32(f"admin-service-capture-asleep:{schema}".encode())


def _shown(record: str) -> str:
    """The shown columns of NEW or OLD as one jsonb object (the consumer reads it back with
    jsonb_populate_record, so types survive; columns we do not show are not copied)."""
    return "jsonb_build_object(" + ", ".join(f"'{c}', {record}.{c}" for c in JOB_COLUMNS) + ")"


def change_capture_ddl(settings: Settings) -> str:
    schema = settings.admin_schema
    columns = ", ".join(JOB_COLUMNS)
    old = ", ".join(f"OLD.{c}" for c in JOB_COLUMNS)
    new = ", ".join(f"NEW.{c}" for c in JOB_COLUMNS)
    # SECURITY DEFINER: the function runs as the role that installs it (the owner of our schema),
    # so the jobs table's writers need no grant on our change table; search_path is pinned so
    # that no writer's objects can stand in for ours. AFTER ROW, so a change that a later
    # trigger or constraint rejects is rolled back with the writer's transaction.
    insert_delete, update = CHANGE_TRIGGERS
    return f"""
CREATE OR REPLACE FUNCTION "{schema}".{CHANGE_FUNCTION}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO "{schema}".job_changes (op, job_row_id, old_status, new_status, job, updated_at)
        VALUES ('D', OLD.id, OLD.status, NULL, {_shown("OLD")}, OLD.updated_at);
    ELSE
        INSERT INTO "{schema}".job_changes (op, job_row_id, old_status, new_status, job, updated_at)
        VALUES (left(TG_OP, 1), NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
                {_shown("NEW")}, NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION "{schema}".{CHANGE_FUNCTION}() FROM PUBLIC;
-- NOTIFY only when the leader sleeps (it holds the lock exclusively): a transaction that
-- NOTIFYs takes a database-wide lock at commit, which would serialise the writers' commits.
-- Otherwise the shared lock, held to the end of this transaction, keeps the leader from going
-- to sleep before it can see this change (ChangeConsumer.wait).
CREATE OR REPLACE FUNCTION "{schema}".{WAKE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared({asleep_lock_key(schema)}) THEN
        PERFORM pg_notify('{CHANGES_CHANNEL}', '');
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {insert_delete} ON {JOBS_TABLE};
DROP TRIGGER IF EXISTS {update} ON {JOBS_TABLE};
DROP TRIGGER IF EXISTS {WAKE_FUNCTION} ON {JOBS_TABLE};
CREATE TRIGGER {insert_delete} AFTER INSERT OR DELETE ON {JOBS_TABLE}
    FOR EACH ROW EXECUTE FUNCTION "{schema}".{CHANGE_FUNCTION}();
-- Only an UPDATE that changes what the service shows is a change (a touch of the same values is not).
CREATE TRIGGER {update} AFTER UPDATE OF {columns} ON {JOBS_TABLE}
    FOR EACH ROW WHEN (ROW({old}) IS DISTINCT FROM ROW({new}))
    EXECUTE FUNCTION "{schema}".{CHANGE_FUNCTION}();
-- Wakes a sleeping leader (PostgreSQL folds identical NOTIFYs in a transaction).
CREATE TRIGGER {WAKE_FUNCTION} AFTER INSERT OR UPDATE OR DELETE ON {JOBS_TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".{WAKE_FUNCTION}();
{MODE_NOTIFY}
""".strip()


def drop_change_capture_ddl(settings: Settings) -> str:
    schema = settings.admin_schema
    drops = [f"DROP TRIGGER IF EXISTS {name} ON {JOBS_TABLE};" for name in (*CHANGE_TRIGGERS, WAKE_FUNCTION)]
    drops += [f'DROP FUNCTION IF EXISTS "{schema}".{name}();' for name in (CHANGE_FUNCTION, WAKE_FUNCTION)]
    return "\n".join([*drops, MODE_NOTIFY])


def run_ddl(engine: Engine, ddl: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)


# Indexes that only the owners of the archive tables may decide on: each serves a query of this
# service that no existing index can (measured in bench/RESULTS.md). Without them
# PostgreSQL reads and sorts every row for page 1 of that sort. Built CONCURRENTLY, so writers
# are never blocked; a failed build leaves an INVALID index that the next run replaces.
ARCHIVE_INDEXES = (
    # updated_at also drives live capture: without it every poll reads the whole table.
    ("admin_idx_jobs_updated_at_id", "(updated_at, id)"),
    ("admin_idx_jobs_completed_at_desc_id", "(completed_at DESC NULLS LAST, id DESC)"),
    ("admin_idx_jobs_completed_at_asc_id", "(completed_at ASC NULLS LAST, id ASC)"),
    # A list filtered by status, newest first (the dashboard's "failed jobs"), without walking
    # the created_at index past every job of the other statuses.
    ("admin_idx_jobs_status_created_id", "(status, created_at, id)"),
)
# Built by earlier versions for the priority and status sorts, which the owner's
# (status, priority, created_at) index serves now (jobs/queries.py): --drop still removes them,
# and install-indexes drops them as the leftovers they are.
RETIRED_INDEXES = ("admin_idx_jobs_status_shown_id", "admin_idx_jobs_priority_id")
# The newest row of each system metric (stats) without reading the whole metrics table.
METRICS_INDEXES = (("admin_idx_metrics_name_recorded", "(metric_name, recorded_at)"),)
# The user_email / user_username filters and the search match users by a partial, case-insensitive
# pattern: without these every such request reads all of auth.users (~280 ms for 1,000,000 users,
# 13 ms with them). Trigram indexes need the pg_trgm extension (a trusted one: the database
# owner may create it); where the server has none, they are skipped and the command says so.
USERS_SCHEMA = users.schema or "auth"
TRIGRAM_EXTENSION = "pg_trgm"
USERS_TRIGRAM_INDEXES = (
    ("admin_idx_users_email_trgm", "USING gin (email gin_trgm_ops)"),
    ("admin_idx_users_username_trgm", "USING gin (username gin_trgm_ops)"),
)


def _schema_of(name: str) -> str:
    return USERS_SCHEMA if any(name == n for n, _ in USERS_TRIGRAM_INDEXES) else ARCHIVE


def index_ddl(invalid: list[str] | tuple[str, ...] = (), *, trigram: bool = False) -> list[str]:
    """CREATE statements; `invalid` (see invalid_indexes) are dropped first, since IF NOT EXISTS
    would keep the unusable leftover of an interrupted build. `trigram`: the server offers
    pg_trgm (trigram_available), so the users' trigram indexes are built too."""
    statements = [f"DROP INDEX CONCURRENTLY IF EXISTS {_schema_of(name)}.{name}" for name in (*invalid, *RETIRED_INDEXES)]
    statements += [
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {JOBS_TABLE} {columns}" for name, columns in ARCHIVE_INDEXES
    ]
    statements += [
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {METRICS_TABLE} {columns}" for name, columns in METRICS_INDEXES
    ]
    tables = [JOBS_TABLE, METRICS_TABLE]
    if trigram:
        statements.append(f"CREATE EXTENSION IF NOT EXISTS {TRIGRAM_EXTENSION}")
        statements += [
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {USERS_TABLE} {method}" for name, method in USERS_TRIGRAM_INDEXES
        ]
        tables.append(USERS_TABLE)
    statements.append(f"ANALYZE {', '.join(tables)}")
    return statements


def drop_index_ddl() -> list[str]:
    """Our indexes; the pg_trgm extension stays (other objects of the owner's may use it)."""
    names = [name for name, _ in ARCHIVE_INDEXES + METRICS_INDEXES + USERS_TRIGRAM_INDEXES] + list(RETIRED_INDEXES)
    return [f"DROP INDEX CONCURRENTLY IF EXISTS {_schema_of(name)}.{name}" for name in names]


def trigram_available(engine: Engine) -> bool:
    """Whether this server can offer pg_trgm (installed or installable)."""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = :n"), {"n": TRIGRAM_EXTENSION}).first())


def invalid_indexes(engine: Engine) -> list[str]:
    """Our indexes left INVALID by an interrupted CONCURRENTLY build."""
    names = [name for name, _ in ARCHIVE_INDEXES + METRICS_INDEXES + USERS_TRIGRAM_INDEXES]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = ANY(:schemas) AND NOT i.indisvalid AND c.relname = ANY(:names)"
            ),
            {"schemas": [ARCHIVE, USERS_SCHEMA], "names": names},
        )
        return [r[0] for r in rows]


def run_each(engine: Engine, statements: list[str], echo: Any = print) -> None:
    """One statement at a time outside a transaction (CONCURRENTLY requires it), echoing each."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET statement_timeout = 0")
        for statement in statements:
            echo(statement + ";")
            conn.exec_driver_sql(statement)
