"""A job as the service shows it: REST rows, details and the live job-update payloads.

A job read with its user (`with_user`) becomes one dict: the table's columns in order, the
status as shown (`queue` -> `queued`), and `user` ({id, email, username}, or null when the
user row is missing). `job_of` keeps Python values (UUIDs, datetimes: the JSON encoder writes
them); `job_json` is the same job with those written as JSON strings, for the event log.
`json_as_text` reads a statement's json/jsonb columns as the text PostgreSQL sends, for answers
that only pass stored JSON on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg2.extensions
from sqlalchemy import Engine, Executable, Select, event, select
from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext
from sqlalchemy.sql import FromClause

from admin_service.db.tables import JOB_COLUMNS, users
from admin_service.jobs.status import normalize

# The labels of the user's columns next to a job's (also in live capture's hand-written SQL).
USER_ID, USER_EMAIL, USER_USERNAME = "user_ref_id", "user_email", "user_username"


def with_user(source: FromClause) -> Select[Any]:
    """Select a job source (table or page subquery) with its user, joined by primary key."""
    return select(
        source,
        users.c.id.label(USER_ID),
        users.c.email.label(USER_EMAIL),
        users.c.username.label(USER_USERNAME),
    ).select_from(source.outerjoin(users, users.c.id == source.c.user_id))


def job_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The job of a row read with its user."""
    job = {name: row[name] for name in JOB_COLUMNS}
    job["status"] = normalize(job["status"])
    user_id = row.get(USER_ID)
    job["user"] = None if user_id is None else {"id": user_id, "email": row[USER_EMAIL], "username": row[USER_USERNAME]}
    return job


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def job_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """job_of with UUIDs and datetimes as the strings JSON carries (what REST writes for them)."""
    job = {name: _json_value(value) for name, value in job_of(row).items()}
    user = job["user"]
    if user is not None:
        job["user"] = {name: _json_value(value) for name, value in user.items()}
    return job


# json (114) and jsonb (3802) as orjson.Fragment of PostgreSQL's text: json_bytes writes it into
# the answer as it is, instead of psycopg2 parsing it into dicts only for orjson to write them
# again (the same document: jsonb's text is its normal form, keys in its own order as parsing
# kept them; only the separators' spaces differ).
_JSON_FRAGMENT = psycopg2.extensions.new_type(
    (114, 3802), "JSON_FRAGMENT", lambda value, cursor: None if value is None else orjson.Fragment(value)
)
_JSON_AS_TEXT = "json_as_text"


def json_as_text(statement: Executable) -> Executable:
    """`statement` with its json/jsonb columns read as orjson.Fragment (psycopg2 only)."""
    return statement.execution_options(**{_JSON_AS_TEXT: True})


@event.listens_for(Engine, "before_cursor_execute")
def _json_columns_as_text(
    conn: Any, cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext | None, executemany: bool
) -> None:
    if context is not None and context.execution_options.get(_JSON_AS_TEXT):
        psycopg2.extensions.register_type(_JSON_FRAGMENT, cast("psycopg2.extensions.cursor", cursor))  # this cursor only
