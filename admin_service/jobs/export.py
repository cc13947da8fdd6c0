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

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, DateTime, Engine, Integer, Select, Text, bindparam, case, cast, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause, Subquery

from admin_service.db.tables import JOB_COLUMNS, jobs, users
from admin_service.errors import database_failure
from admin_service.jobs import status as job_status
from admin_service.jobs.queries import JobFilters, page_subquery
from admin_service.jobs.schemas import Moment

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

# The driver's tuples: (line, sort key, row id), the last two the keyset position as text.
Rows = Sequence[tuple[Any, ...]]


def page_users() -> NamedFromClause:
    """The users table as a batch joins it: by primary key, the join left to the planner. For
    a batch of EXPORT_BATCH_ROWS (10,000) rows it hashes the users (one sequential scan, ~2 us
    a row at 100,000 users) instead of one index probe a row (LATERAL ... LIMIT 1: ~8 us a row,
    the largest part of a batch's cost); for a short batch it probes."""
    return users.alias("page_user")


# What makes a text cell more than its text: a first character a spreadsheet may run as a
# formula (FORMULA_STARTS, as code points), or one RFC 4180 quotes. Tested with ascii() and
# strpos(): most cells hold neither, and these cost a third of a regular expression.
FORMULA_CODES = tuple(ord(c) for c in FORMULA_STARTS)
QUOTED_CHARACTERS = (",", '"', "\r", "\n")


def csv_text(value: ColumnElement[Any], probe: ColumnElement[Any] | None = None) -> ColumnElement[str]:
    """A text cell, ready to write: a leading formula character escaped with `'` (safe_cell),
    then quoted as RFC 4180 wants (a cell holding , " CR or LF in quotes, quotes doubled).
    NULL stays NULL (concat writes it as an empty cell). `probe`: a cheaper expression that
    needs care exactly when `value` does (the stored status for the shown one)."""
    probe = value if probe is None else probe
    formula = func.ascii(probe).in_(FORMULA_CODES)
    special = [func.strpos(probe, c) > 0 for c in QUOTED_CHARACTERS]
    escaped = case((formula, func.concat("'", value)), else_=value)
    quoted = func.concat('"', func.replace(escaped, '"', '""'), '"')
    return case((or_(*special), quoted), (formula, escaped), else_=value)


def csv_instant(value: ColumnElement[Any]) -> ColumnElement[str]:
    """An instant as the JSON answers write it: ISO-8601 with `T` and a whole offset
    (`2026-12-03T12:20:23.27+00:00`), which is PostgreSQL's own JSON form of a timestamptz;
    NULL stays NULL."""
    return func.btrim(cast(func.to_json(value), Text), '"')


def csv_line(page: Subquery, user: NamedFromClause) -> ColumnElement[str]:
    """A whole CSV line (CRLF included), written by PostgreSQL: uuids, integers and instants as
    text, text cells escaped and quoted, joined by `concat` (NULL as an empty cell). Python
    only joins the lines of a batch: its work per row is one string, so an export leaves the
    worker's other requests most of its time (it cost 8-10 us a row when Python joined cells,
    more with csv.writer). Not COPY ... TO STDOUT: psycopg2 refuses copy_expert while a wait
    callback is installed (db/green.py, in every gunicorn worker: "copy_expert cannot be used
    with an asynchronous callback"), and a blocking COPY would stall the worker's greenlets."""
    cells: list[ColumnElement[Any]] = []
    for name in JOB_COLUMNS:
        column = page.c[name]
        if name == "status":
            # An alias and its canonical name are plain words: the stored text tells whether
            # the shown one needs care, without evaluating the CASE for every test.
            cells.append(csv_text(job_status.shown(column), probe=column))
        elif name in TEXT_COLUMNS:
            cells.append(csv_text(column))
        elif isinstance(jobs.c[name].type, DateTime):
            cells.append(csv_instant(column))
        else:
            cells.append(column)
    cells += [csv_text(user.c.email), csv_text(user.c.username)]
    parts: list[Any] = []
    for cell in cells:
        parts += [cell, ","]
    parts[-1] = "\r\n"
    return func.concat(*parts).label("line")


# orjson's instant (what every JSON answer writes): ISO-8601 with the session's offset, the
# fraction of six digits or none (to_char always writes six: '.000000' is dropped after).
JSON_INSTANT = 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'


def json_value(value: ColumnElement[Any], kind: Any) -> ColumnElement[str]:
    """A value as the service's JSON encoder writes it (json_bytes), in SQL: text by to_json
    (the same escapes: \\" \\\\ \\n \\r \\t \\b \\f, other control characters as \\u00xx, the rest
    as is), numbers as they are, uuids as strings, instants as orjson writes them, NULL as null."""
    text: ColumnElement[Any]
    if isinstance(kind, DateTime):
        text = func.to_json(func.replace(func.to_char(value, JSON_INSTANT), ".000000", ""))
    elif isinstance(kind, Integer):
        text = cast(value, Text)
    else:
        text = cast(func.to_json(cast(value, Text)), Text)
    return func.coalesce(cast(text, Text), "null")


def ndjson_line(page: Subquery, user: NamedFromClause) -> ColumnElement[str]:
    """A whole NDJSON line, byte for byte what json_bytes(job_of(row)) writes: the job's
    columns in order (the status as shown), then `user` ({id, email, username} or null).
    Written by PostgreSQL, it costs the worker one string a row instead of ~12 us of dict
    building and encoding."""
    parts: list[Any] = ["{"]
    for i, name in enumerate(JOB_COLUMNS):
        column = job_status.shown(page.c[name]) if name == "status" else page.c[name]
        parts += [("," if i else "") + f'"{name}":', json_value(column, jobs.c[name].type)]
    user_object = func.concat(
        '{"id":',
        json_value(user.c.id, users.c.id.type),
        ',"email":',
        json_value(user.c.email, users.c.email.type),
        ',"username":',
        json_value(user.c.username, users.c.username.type),
        "}",
    )
    parts += [',"user":', case((user.c.id.is_(None), "null"), else_=user_object), "}\n"]
    return func.concat(*parts).label("line")


def batch_statement(plan: ExportPlan, after: tuple[Any, Any] | None) -> Select[Any]:
    """One batch: each row's whole line (CSV or NDJSON) and its keyset position as text.
    `after` holds bound parameters (AFTER_KEY, AFTER_ID), the batch size is BATCH_ROWS: one
    statement serves every batch. The last two columns are the keyset position of the row."""
    page, ordering = page_subquery(plan.conds, plan.sort_by, plan.order, bindparam(BATCH_ROWS, 1, type_=Integer), after=after)
    user = page_users()
    columns: list[ColumnElement[Any]]
    columns = [csv_line(page, user) if plan.fmt == "csv" else ndjson_line(page, user)]
    # The keyset as text: a datetime made of every row's key cost ~1 us a row, for the last row
    # only; its text (full precision, with its offset) binds back into the next batch as is.
    columns += [cast(page.c.sort_key, Text).label("sort_key"), cast(page.c.id, Text).label("row_id")]
    return select(*columns).select_from(page.outerjoin(user, user.c.id == page.c.user_id)).order_by(*ordering)


BATCH_ROWS, AFTER_KEY, AFTER_ID = "export_batch_rows", "export_after_key", "export_after_id"


class BatchQueries:
    """The SQL of an export's batches, compiled once: building and compiling the statement
    (its cache key alone walks every expression of the CSV line) cost ~10 ms a batch, 10 s of
    a million-row export. Three shapes: the first batch, after a row with a sort value, and
    after a row without one (completed_at NULL, sorted last)."""

    def __init__(self, engine: Engine, plan: ExportPlan) -> None:
        self._engine = engine
        self._plan = plan
        self._compiled: dict[str, tuple[str, dict[str, Any]]] = {}

    def _sql(self, shape: str) -> tuple[str, dict[str, Any]]:
        if shape not in self._compiled:
            # Placeholder values: statement() binds the real ones for each batch.
            after_id = bindparam(AFTER_ID, None, type_=jobs.c.id.type, required=False)
            after_key: BindParameter[Any] = bindparam(AFTER_KEY, None, required=False)
            after = {"first": None, "value": (after_key, after_id), "null": (None, after_id)}[shape]
            compiled = batch_statement(self._plan, after).compile(
                dialect=self._engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            self._compiled[shape] = (str(compiled), dict(compiled.params))
        return self._compiled[shape]

    def statement(self, size: int, after: tuple[Any, uuid.UUID] | None) -> tuple[str, dict[str, Any]]:
        shape = "first" if after is None else ("null" if after[0] is None else "value")
        sql, params = self._sql(shape)
        params = {**params, BATCH_ROWS: size}
        if after is not None:
            params.update({AFTER_KEY: after[0], AFTER_ID: after[1]})
        return sql, params


class Prefetch:
    """One batch read on a thread of its own (a greenlet under gevent, where psycogreen makes
    psycopg2 cooperative) while the previous batch is written: PostgreSQL writes the next lines
    while this process sends the last ones, instead of each waiting for the other."""

    def __init__(self, engine: Engine, statement: tuple[str, dict[str, Any]]) -> None:
        self._engine = engine
        self._statement = statement
        self._rows: Rows = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="export-batch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            sql, params = self._statement
            with self._engine.connect() as conn:
                # The driver's tuples: SQLAlchemy's Row objects cost ~0.3 us a row more, and a
                # batch holds only text (nothing for a result processor to convert).
                self._rows = conn.exec_driver_sql(sql, params).cursor.fetchall()
        except BaseException as exc:  # re-raised by result(), in the stream
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Rows:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._rows


def batches(engine: Engine, plan: ExportPlan) -> Generator[Rows, None, None]:
    """The matching rows in list order, EXPORT_BATCH_ROWS at a time, at most max_rows in all:
    each batch the next keyset page after the last row of the one before, read while the one
    before is written. Closed early (the client went away), at most the batch being read
    completes, on its own connection, and nothing after it is read."""
    queries = BatchQueries(engine, plan)
    left = plan.max_rows
    size = min(plan.batch_rows, left)
    pending = Prefetch(engine, queries.statement(size, None))
    try:
        while True:
            rows = pending.result()
            left -= len(rows)
            more = len(rows) == size and left > 0
            if more:
                last: Any = rows[-1]  # ... sort_key, row_id
                size = min(plan.batch_rows, left)
                pending = Prefetch(engine, queries.statement(size, (last[-2], uuid.UUID(last[-1]))))
            if rows:
                yield rows
            if not more:
                return
    finally:
        # Closed early: the batch being read completes before the stream says it ended, so
        # that nothing of the export is left running in the database once it has.
        pending.wait()


def csv_header() -> bytes:
    return (",".join(CSV_COLUMNS) + "\r\n").encode()


def lines(rows: Rows) -> bytes:
    """The batch's lines (csv_line or ndjson_line wrote each, its line end included), as one chunk."""
    return "".join([row[0] for row in rows]).encode()


ENCODERS: dict[str, tuple[Callable[[], bytes], Callable[[Rows], bytes]]] = {
    "csv": (csv_header, lines),
    "ndjson": (lambda: b"", lines),
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
        # closing(): a stream closed early closes its batches (their last read done) before
        # it logs how it ended.
        with closing(batches(engine, plan)) as read:
            for rows in read:
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
