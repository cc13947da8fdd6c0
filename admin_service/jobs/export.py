"""The job export: a filtered, sorted job list as CSV or NDJSON, streamed in keyset batches.

Memory stays constant whatever the size: rows are read in batches of EXPORT_BATCH_ROWS through
the list's own page statement (queries.page_statement, the keyset position of the last row of
a batch starting the next; never OFFSET), each batch on a pooled connection of its own that is
returned before the batch is written, so a slow client holds no connection. Between batches
the stream yields to the worker's other requests (under gevent, `time.sleep(0)` is gevent's).
A client that disconnects ends it: the WSGI server closes the body, and no further batch is
read. A database error mid-stream ends the stream without its final chunk, so every HTTP client
sees an incomplete download instead of a short file that looks whole, and the log says why.

Each batch is its own snapshot (the service reads in autocommit): a job created or changed
during a long export may appear or move, as when paging the list by cursor.

The row cap (EXPORT_MAX_ROWS) is decided before the first byte: a bounded count
(`SELECT count(*) FROM (... LIMIT cap + 1)`) tells whether more rows match than the cap, and
the answer says so in its headers (`X-Export-Truncated`, `X-Export-Max-Rows`) and its file
name. A marker row inside the data would be read as a job by every CSV consumer.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.elements import ColumnElement

from admin_service.db.tables import JOB_COLUMNS, jobs
from admin_service.errors import database_failure
from admin_service.jobs.queries import JobFilters, page_statement
from admin_service.jobs.schemas import Moment
from admin_service.jobs.serialize import USER_EMAIL, USER_USERNAME, job_of
from admin_service.web import json_bytes

log = logging.getLogger("admin_service.export")

# CSV: the job's columns as the list shows them, then its user's (flat: CSV has no nesting).
# The user's id is the job's user_id; a job whose user row is gone has empty user cells.
CSV_COLUMNS = (*JOB_COLUMNS, "user_email", "user_username")
# Columns holding text someone else wrote: the ones a spreadsheet could take for a formula.
# Numbers, uuids and timestamps are written by this module and never start with = + @, and a
# negative priority must stay a number.
TEXT_COLUMNS = frozenset({"job_id", "status", "error_message", "assessment_name", "user_email", "user_username"})
# What a spreadsheet may run as a formula when a cell starts with it (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson; charset=utf-8"}


class ExportAborted(Exception):
    """The database failed mid-stream: raised out of the body, so that the server drops the
    connection without the final chunk (the download is seen to fail)."""


def safe_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading `'`
    (the apostrophe spreadsheets hide and read as "text follows")."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@dataclass(frozen=True)
class ExportPlan:
    """What one export reads and how it announces itself, decided before the first byte."""

    conds: list[ColumnElement[bool]]
    sort_by: str
    order: str
    fmt: str
    max_rows: int
    batch_rows: int
    truncated: bool
    filename: str


def plan_export(
    conn: Connection, args: Mapping[str, Any], tz: ZoneInfo, max_rows: int, batch_rows: int, now: datetime | None = None
) -> ExportPlan:
    """Validate the filters (a 400 before any byte is sent) and find whether the cap cuts."""
    filters = JobFilters.from_args(dict(args))
    conds = filters.conditions(tz, conn)
    bounded = select(jobs.c.id).where(*conds).limit(max_rows + 1).subquery("capped")
    matching = int(conn.execute(select(func.count()).select_from(bounded)).scalar_one())
    truncated = matching > max_rows
    fmt = args["format"]
    name = export_filename(args, fmt, now or datetime.now(UTC), max_rows if truncated else None)
    return ExportPlan(conds, args["sort_by"], args["sort_order"], fmt, max_rows, batch_rows, truncated, name)


# --- file name ----------------------------------------------------------------------------------

SLUG = re.compile(r"[^a-z0-9]+")
SLUG_MAX = 40


def slug(value: object) -> str:
    return SLUG.sub("-", str(value).lower()).strip("-")[:SLUG_MAX].strip("-")


def _moment_text(moment: Moment) -> str:
    value = moment.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert isinstance(value, date)
    return value.isoformat()


def export_filename(args: Mapping[str, Any], fmt: str, now: datetime, cut_at: int | None) -> str:
    """`jobs[-filter...]-<UTC time>[-first<N>].<fmt>`: what was exported and when, in ASCII
    (safe in every Content-Disposition parser and file system)."""
    parts = ["jobs"]
    if args.get("status"):
        parts.append("-".join(args["status"]))
    for name in ("assessment_name", "search", "user_email", "user_username"):
        if args.get(name):
            text = slug(args[name])
            if text:
                parts.append(f"{name.replace('_', '')}-{text}")
    if args.get("user_id"):
        parts.append(f"user-{str(args['user_id'])[:8]}")
    if args.get("date_from") is not None:
        parts.append(f"from-{_moment_text(args['date_from'])}")
    if args.get("date_to") is not None:
        parts.append(f"to-{_moment_text(args['date_to'])}")
    if (args["sort_by"], args["sort_order"]) != ("created_at", "DESC"):
        parts.append(f"by-{args['sort_by'].replace('_', '')}-{args['sort_order'].lower()}")
    parts.append(now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
    if cut_at is not None:
        parts.append(f"first{cut_at}")
    return "_".join(parts) + f".{fmt}"


# --- rows -----------------------------------------------------------------------------------------

Rows = Sequence[Mapping[str, Any]]


def batches(engine: Engine, plan: ExportPlan) -> Iterator[Rows]:
    """The matching rows in list order, EXPORT_BATCH_ROWS at a time, at most max_rows in all."""
    after: tuple[Any, uuid.UUID] | None = None
    left = plan.max_rows
    while left > 0:
        size = min(plan.batch_rows, left)
        with engine.connect() as conn:
            rows = conn.execute(page_statement(plan.conds, plan.sort_by, plan.order, size, after=after)).mappings().all()
        if rows:
            yield rows
        if len(rows) < size:
            return
        left -= len(rows)
        last = rows[-1]
        after = (last["sort_key"], last["id"])


def _csv_value(name: str) -> Callable[[Any], Any]:
    if name in TEXT_COLUMNS:
        return lambda v: "" if v is None else safe_cell(v)
    return lambda v: "" if v is None else (v.isoformat() if isinstance(v, datetime) else v)


CSV_VALUES = tuple((name, _csv_value(name)) for name in JOB_COLUMNS)


def csv_header() -> bytes:
    return (",".join(CSV_COLUMNS) + "\r\n").encode()


def csv_rows(rows: Rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF, fields quoted when they hold , " or a line break
    email, username = _csv_value("user_email"), _csv_value("user_username")
    shown = job_of  # the status as shown (queue -> queued), like the list
    for row in rows:
        job = shown(row)
        writer.writerow([value(job[name]) for name, value in CSV_VALUES] + [email(row[USER_EMAIL]), username(row[USER_USERNAME])])
    return out.getvalue().encode()


def ndjson_rows(rows: Rows) -> bytes:
    """One job per line, exactly as the list shows it (with its `user` object or null)."""
    return b"".join(json_bytes(job_of(row)) + b"\n" for row in rows)


ENCODERS: dict[str, tuple[Callable[[], bytes], Callable[[Rows], bytes]]] = {
    "csv": (csv_header, csv_rows),
    "ndjson": (lambda: b"", ndjson_rows),
}


def stream(engine: Engine, plan: ExportPlan, fields: Mapping[str, Any] | None = None) -> Iterator[bytes]:
    """The body: the header (CSV), then one chunk per batch. Logs how it ended, with the rows sent."""
    header, encode = ENCODERS[plan.fmt]
    sent = 0
    outcome = "stopped: the client went away"
    started = time.monotonic()
    try:
        first = header()
        if first:
            yield first
        for rows in batches(engine, plan):
            chunk = encode(rows)
            sent += len(rows)
            yield chunk
            # Under gevent: the worker's other requests run before the next batch is formatted.
            time.sleep(0)
        outcome = f"complete (cut at EXPORT_MAX_ROWS={plan.max_rows})" if plan.truncated else "complete"
    except (DBAPIError, PoolTimeoutError) as exc:
        reason = database_failure(exc) if isinstance(exc, DBAPIError) else "no pooled connection in time"
        outcome = f"aborted after a database error: {reason}"
        raise ExportAborted(outcome) from exc
    finally:
        level = logging.ERROR if outcome.startswith("aborted") else logging.INFO
        log.log(
            level,
            f"export {outcome}",
            extra={
                "fields": {
                    **(fields or {}),
                    "format": plan.fmt,
                    "rows": sent,
                    "seconds": round(time.monotonic() - started, 3),
                    "filename": plan.filename,
                }
            },
        )
