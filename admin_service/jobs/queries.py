"""SQL for the job list, details and results. Every request path is index-friendly:
users are joined only for the rows of a page, deep pages use a keyset cursor."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement, ColumnElement, Grouping
from sqlalchemy.sql.selectable import CTE, Subquery

from admin_service.clock import NotAnInstant, full_precision, parse_instant
from admin_service.db.tables import RESULTS_TABLE, jobs, users
from admin_service.errors import validation_error
from admin_service.jobs import status as job_status
from admin_service.jobs.schemas import SORT_FIELDS, Moment, text_problem
from admin_service.jobs.serialize import job_of, with_user
from admin_service.triage.signature import signature_fragments, signature_sql

if TYPE_CHECKING:
    from admin_service.jobs.stats import SharedStats


def escape_like(value: str) -> str:
    """Make % and _ in user input match themselves (the old service let them wildcard)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(value: str) -> str:
    return f"%{escape_like(value)}%"


def partial_match(column: ColumnElement[Any], term: str) -> ColumnElement[bool]:
    """`column ILIKE '%term%'` (wildcards in term escaped). For an ASCII term the comparison runs
    in the C collation first: ASCII case folding instead of the locale's, several times cheaper
    per row, and the same answer for any ASCII term (non-ASCII characters cannot equal it either
    way; only exotic letters whose lower case is ASCII, like the Kelvin sign, differ). The same
    test in the column's own collation follows, on the rows the first lets through: it is what a
    trigram index (`db install-indexes` where pg_trgm exists) can serve, which it cannot for a
    comparison in another collation."""
    pattern = contains(term)
    if term.isascii():
        return and_(column.collate("C").ilike(pattern, escape="\\"), column.ilike(pattern, escape="\\"))
    return column.ilike(pattern, escape="\\")


# A user filter matching more users than this is kept as a subquery.
MAX_LOOKED_UP_USERS = 1000


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True)
class JobFilters:
    statuses: tuple[str, ...] = ()
    user_id: uuid.UUID | None = None
    user_email: str | None = None
    user_username: str | None = None
    assessment_name: str | None = None
    search: str | None = None
    date_from: Moment | None = None
    date_to: Moment | None = None
    signature: str | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> JobFilters:
        return cls(
            statuses=tuple(args.get("status") or ()),
            user_id=args.get("user_id"),
            user_email=args.get("user_email"),
            user_username=args.get("user_username"),
            assessment_name=args.get("assessment_name"),
            search=args.get("search"),
            date_from=args.get("date_from"),
            date_to=args.get("date_to"),
            signature=args.get("signature"),
        )

    def conditions(self, tz: ZoneInfo, conn: Connection | None = None) -> list[ColumnElement[bool]]:
        """The WHERE conditions. With `conn`, users matched by email/username are looked up once
        here, not again in every statement (the page and its count) as a subquery."""
        conds: list[ColumnElement[bool]] = []
        if self.statuses:
            conds.append(jobs.c.status.in_(job_status.stored_values(self.statuses)))
        if self.user_id is not None:
            conds.append(jobs.c.user_id == self.user_id)
        if self.assessment_name:
            conds.append(assessment_name_matches(self.assessment_name))
        user_conds = []
        if self.user_email:
            user_conds.append(partial_match(users.c.email, self.user_email))
        if self.user_username:
            user_conds.append(partial_match(users.c.username, self.user_username))
        if user_conds:
            matched = select(users.c.id).where(*user_conds)
            ids = None
            if conn is not None:
                ids = conn.execute(matched.limit(MAX_LOOKED_UP_USERS + 1)).scalars().all()
            if ids is not None and len(ids) <= MAX_LOOKED_UP_USERS:
                conds.append(jobs.c.user_id.in_(ids) if ids else false())
            else:
                conds.append(jobs.c.user_id.in_(matched))
        if self.search:
            conds.append(self._search_condition(self.search))
        if self.signature:
            conds.extend(signature_matches(self.signature))
        conds.extend(self._created_at_range(tz))
        return conds

    def _created_at_range(self, tz: ZoneInfo) -> list[ColumnElement[bool]]:
        """date_from inclusive; a date-time date_to inclusive, a plain date_to up to the next
        midnight in `tz`. A range that holds no instant is a 400 on date_from."""
        start = self.date_from.start(tz) if self.date_from is not None else None
        conds = [jobs.c.created_at >= start] if start is not None else []
        if self.date_to is None:
            return conds
        if not self.date_to.date_only:
            end = self.date_to.start(tz)
            empty = start is not None and start > end
            conds.append(jobs.c.created_at <= end)
        elif self.date_to.value == date.max:
            empty = False  # no midnight after the last day a datetime can hold: no upper bound
        else:
            end = datetime.combine(self.date_to.value + timedelta(days=1), time.min, tzinfo=tz)
            empty = start is not None and start >= end
            conds.append(jobs.c.created_at < end)
        if empty:
            raise validation_error("date_from", "date_from must not be after date_to.")
        return conds

    @staticmethod
    def _search_condition(term: str) -> ColumnElement[bool]:
        """One term against what an admin pastes or remembers of a job: its row id (exact), its
        job_id (prefix, case-sensitive), its user's email or username, its assessment name and
        its error message (partial, case-insensitive). Wildcards in the term match themselves.
        The error message is matched with a plain ILIKE (no C collation): the trigram index
        `db install-indexes` offers is only usable for the column's own collation."""
        matches: list[ColumnElement[bool]] = [jobs.c.job_id.like(f"{escape_like(term)}%", escape="\\")]
        as_uuid = parse_uuid(term)
        if as_uuid is not None:
            matches.append(jobs.c.id == as_uuid)
        user_match = select(users.c.id).where(
            or_(
                users.c.email.ilike(contains(term), escape="\\"),
                users.c.username.ilike(contains(term), escape="\\"),
            )
        )
        matches.append(jobs.c.user_id.in_(user_match))
        matches.append(assessment_name_matches(term, "searched_assessment_names"))
        matches.append(jobs.c.error_message.ilike(contains(term), escape="\\"))
        return or_(*matches)

    @property
    def is_empty(self) -> bool:
        return self == JobFilters()

    @property
    def selective(self) -> bool:
        """A free-text search or a signature: per-row tests that may let few rows through, so a
        page is found faster by filtering and sorting the matches than by walking an index in
        list order (queries.status_branches_page)."""
        return bool(self.search or self.signature)

    @property
    def statuses_only(self) -> bool:
        """No filter but status: what the shared per-status counts can answer."""
        return self == JobFilters(statuses=self.statuses)


def signature_matches(signature: str) -> list[ColumnElement[bool]]:
    """Jobs whose error message has this signature (triage/signature.py). Words every such
    message contains are tested first: strpos is far cheaper than the rules' regular
    expressions, which then run only on the rows it lets through."""
    conds: list[ColumnElement[bool]] = [func.strpos(jobs.c.error_message, word) > 0 for word in signature_fragments(signature)]
    conds.append(signature_sql(jobs.c.error_message) == signature)
    return conds


def assessment_name_matches(term: str, cte_name: str = "assessment_names") -> ColumnElement[bool]:
    """`assessment_name ILIKE '%term%'`, tested once per distinct name instead of once per row.

    A job table holds millions of rows but a handful of assessment names. The distinct names
    come from the assessment_name index by a skip scan (one index probe per name), the pattern
    is applied to those, and the rows are then found with `= ANY(matching names)`: an index
    range per name for counts, a cheap filter when walking another index for a page. Same
    result as the ILIKE on every row, including NULL names (never matched).
    """
    names = distinct_assessment_names(cte_name)
    matching = select(names.c.name).where(names.c.name.ilike(contains(term), escape="\\")).scalar_subquery()
    return jobs.c.assessment_name == func.any(func.array(matching))


def distinct_assessment_names(cte_name: str = "assessment_names") -> CTE:
    """The distinct non-NULL assessment names (column `name`, ascending, with one NULL row at
    the end), by a skip scan of the assessment_name index: one index probe per name. A statement
    using it twice (the assessment_name filter and a search) needs two names."""
    return distinct_values("assessment_name", cte_name)


def distinct_values(column: str, cte_name: str) -> CTE:
    """The distinct non-NULL values of an indexed jobs column (column `name`, ascending, with one
    NULL row at the end), by a skip scan of its index: one index probe per value."""
    first = jobs.alias(f"{cte_name}_first")
    step = jobs.alias(f"{cte_name}_next")
    names = (
        select(first.c[column].label("name"))
        .where(first.c[column].is_not(None))
        .order_by(first.c[column])
        .limit(1)
        .cte(cte_name, recursive=True)
    )
    following = select(step.c[column]).where(step.c[column] > names.c.name).order_by(step.c[column]).limit(1).scalar_subquery()
    return names.union_all(select(following).where(names.c.name.is_not(None)))


# More names than this is not a vocabulary but free text: the dashboard offers the first ones.
MAX_ASSESSMENT_NAMES = 200


def assessment_names(conn: Connection) -> list[str]:
    names = distinct_assessment_names()
    rows = conn.execute(select(names.c.name).where(names.c.name.is_not(None)).limit(MAX_ASSESSMENT_NAMES)).scalars()
    return list(rows)


# --- keyset cursor ---------------------------------------------------------------------


def encode_cursor(sort_by: str, order: str, value: Any, row_id: uuid.UUID) -> str:
    if isinstance(value, datetime):
        value = full_precision(value)  # UTC, whatever the session's time zone: parse_instant reads it
    raw = json.dumps([sort_by, order, value, str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


NOT_OUR_CURSOR = "Not a cursor this service issued."
# The priority column is an integer: a bound beyond it is no cursor of ours.
INT4 = range(-(2**31), 2**31)


def decode_cursor(cursor: str, sort_by: str, order: str) -> tuple[Any, uuid.UUID]:
    """The (sort value, row id) a cursor resumes after, checked like any other input: every
    value in it goes through the parser of its kind, since it reaches the statement."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        c_sort, c_order, value, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(row_id, str):  # uuid.UUID(123) raises AttributeError, not ValueError
            raise ValueError(row_id)
        row_uuid = uuid.UUID(row_id)
    except (ValueError, TypeError):
        raise validation_error("cursor", NOT_OUR_CURSOR) from None
    # Only names of ours are echoed: anything else may not even be encodable (a lone surrogate).
    if c_sort not in SORT_FIELDS or c_order not in ("ASC", "DESC"):
        raise validation_error("cursor", NOT_OUR_CURSOR)
    if c_sort != sort_by or c_order != order:
        raise validation_error("cursor", f"The cursor was issued for sort_by={c_sort}&sort_order={c_order}.")
    if sort_by in COMPOUND_SORTS:
        return compound_value(value, sort_by), row_uuid
    if value is None:
        return None, row_uuid
    if sort_by.endswith("_at"):
        if not isinstance(value, str):
            raise validation_error("cursor", NOT_OUR_CURSOR)
        try:
            value = parse_instant(value)
        except NotAnInstant:
            raise validation_error("cursor", NOT_OUR_CURSOR) from None
    elif sort_by == "priority":
        # bool is an int to Python but not to PostgreSQL (integer < boolean is an error).
        if not isinstance(value, int) or isinstance(value, bool) or value not in INT4:
            raise validation_error("cursor", NOT_OUR_CURSOR)
    elif sort_by == "status":
        if not isinstance(value, str) or text_problem(value) is not None:
            raise validation_error("cursor", NOT_OUR_CURSOR)
    return value, row_uuid


# The sorts served by the owner's (status, priority, created_at) index: every row is ordered by
# these columns, then id. Their cursor value is the list of these columns as text (the page's
# `sort_key`, an array), so that a cursor, an export batch and a bound parameter carry one value.
COMPOUND_SORTS: dict[str, tuple[str, ...]] = {
    "priority": ("priority", "created_at"),
    "status": ("status", "priority", "created_at"),
}
OLD_CURSOR = "The cursor was issued before sort_by={sort_by} was ordered by {columns}, id: start again from the first page."


def compound_value(value: Any, sort_by: str) -> list[str]:
    """A compound cursor value, each part checked by the parser of its kind and written in the
    one form the statement casts back (int, full-precision UTC instant, text)."""
    columns = COMPOUND_SORTS[sort_by]
    if not isinstance(value, list):
        # A scalar is the format of the time the sort was by one column (and id): not an attack.
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            raise validation_error("cursor", OLD_CURSOR.format(sort_by=sort_by, columns=", ".join(columns)))
        raise validation_error("cursor", NOT_OUR_CURSOR)
    if len(value) != len(columns) or not all(isinstance(part, str) for part in value):
        raise validation_error("cursor", NOT_OUR_CURSOR)
    parts: list[str] = []
    for column, part in zip(columns, value, strict=True):
        if column == "priority":
            if not part.lstrip("-").isdigit() or not part.isascii() or int(part) not in INT4:
                raise validation_error("cursor", NOT_OUR_CURSOR)
            parts.append(str(int(part)))
        elif column == "created_at":
            try:
                parts.append(full_precision(parse_instant(part)))
            except NotAnInstant:
                raise validation_error("cursor", NOT_OUR_CURSOR) from None
        else:
            if text_problem(part) is not None:
                raise validation_error("cursor", NOT_OUR_CURSOR)
            parts.append(part)
    return parts


# Of the sort columns only completed_at may be NULL (db/fixture.sql mirrors production). The
# others are ordered without NULLS LAST and bounded by `key <= value` on cursor pages: both
# are what lets PostgreSQL walk the created_at index instead of sorting the table per page.
NULLABLE_SORTS = frozenset({"completed_at"})


def sort_key(sort_by: str) -> ColumnElement[Any]:
    """What rows are ordered by: the column, but status as it is shown (`queue` as `queued`),
    so that a tie across both spellings is broken by id like any other tie."""
    if sort_by == "status":
        return job_status.shown(jobs.c.status)
    return jobs.c[sort_by]


def keyset_condition(key: ColumnElement[Any], order: str, value: Any, row_id: uuid.UUID, nullable: bool) -> ColumnElement[bool]:
    """Rows after (value, id) in `ORDER BY key <order> [NULLS LAST], id <order>`."""
    after_id = jobs.c.id > row_id if order == "ASC" else jobs.c.id < row_id
    if value is None:
        return and_(key.is_(None), after_id)
    beyond = key > value if order == "ASC" else key < value
    if not nullable:
        reach = key >= value if order == "ASC" else key <= value
        return and_(reach, or_(beyond, after_id))
    return or_(beyond, and_(key == value, after_id), key.is_(None))


def _ordering(key: ColumnElement[Any], row_id: ColumnElement[Any], order: str, nullable: bool) -> list[Any]:
    first = key.asc() if order == "ASC" else key.desc()
    if nullable:
        first = first.nulls_last()
    return [first, row_id.asc() if order == "ASC" else row_id.desc()]


# --- list --------------------------------------------------------------------------------


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <stmt>` with the statement's values as bound parameters. Rendering
    them into the SQL text instead (literal_binds) put user input in the query and failed on
    any filter containing `:name`."""

    inherit_cache = False

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.stmt, **kw)


# Up to this many jobs an exact count costs a few milliseconds: count now. Beyond it, a list
# filtered by status only (or not at all) takes its total from the shared per-status counts of
# jobs/stats.py (exact when computed, at most JOB_STATS_INTERVAL_MS old): countMode
# "exact-cached". A count of a million rows costs 50-150 ms, more than the page itself.
EXACT_COUNT_MAX_ROWS = 100_000


def table_is_big(conn: Connection, shared: Any) -> bool:
    """More jobs than an exact count per request can afford (the planner's row count, or the
    shared stats' total), judged by the shared stats; without them (a user's jobs) never."""
    if shared is None:
        return False
    value = shared.peek()
    rows = value["overview"]["total"] if value is not None else shared.table_rows(conn)
    return rows is not None and rows > EXACT_COUNT_MAX_ROWS


def cached_count(conn: Connection, filters: JobFilters, shared: Any) -> tuple[int, datetime] | None:
    """The total from the shared per-status counts and when they were computed, when the table
    is big enough to need it."""
    if shared is None or not filters.statuses_only or not table_is_big(conn, shared):
        return None
    value, age_ms = shared.get()
    overview = value["overview"]
    counted_at = datetime.now(UTC) - timedelta(milliseconds=age_ms)
    if not filters.statuses:
        return int(overview["total"]), counted_at
    return sum(int(overview[name]) for name in filters.statuses), counted_at


@dataclass(frozen=True)
class ListCounts:
    """Exact totals of filtered lists shared by every worker and instance (ADMIN_SCHEMA.list_counts,
    migration 0006): a filter's total is counted at most once per `interval_s` for the whole
    deployment. A stale total is recounted by the one request that claims it; the others serve
    the stale one meanwhile (exact as of its countedAt), so a 1.7M-row count is not run by every
    worker at once when it expires. A claim older than `claim_s` (its counter died or hit the
    statement timeout) may be taken over."""

    schema: str
    interval_s: float
    claim_s: float

    @staticmethod
    def key(filters: JobFilters, tz: ZoneInfo) -> str:
        # The filter as given, plus the time zone that gives a plain date its instants.
        def plain(value: Any) -> Any:
            if isinstance(value, Moment):
                return value.value.isoformat()  # a date and a date-time differ in form
            return str(value) if isinstance(value, uuid.UUID) else value

        raw = json.dumps([[f.name, plain(getattr(filters, f.name))] for f in fields(filters)] + [str(tz)])
        return hashlib.sha256(raw.encode()).hexdigest()

    def total(self, conn: Connection, count: Select[Any], key: str) -> tuple[int, datetime]:
        table = f'"{self.schema}".list_counts'
        row = conn.execute(
            text(
                f"SELECT total, counted_at, counted_at > now() - make_interval(secs => :interval) AS fresh "
                f"FROM {table} WHERE filter_key = :key"
            ),
            {"key": key, "interval": self.interval_s},
        ).first()
        if row is not None and row.total is not None and row.fresh:
            return int(row.total), row.counted_at
        claimed = conn.execute(
            text(
                f"INSERT INTO {table} (filter_key, counting_since) VALUES (:key, now()) "
                f"ON CONFLICT (filter_key) DO UPDATE SET counting_since = now() "
                f"WHERE {table}.counting_since IS NULL OR {table}.counting_since < now() - make_interval(secs => :claim) "
                f"RETURNING filter_key"
            ),
            {"key": key, "claim": self.claim_s},
        ).first()
        if claimed is None and row is not None and row.total is not None:
            return int(row.total), row.counted_at  # another request is recounting it
        total, counted_at = conn.execute(count.add_columns(func.statement_timestamp())).one()
        if claimed is not None:
            conn.execute(
                text(f"UPDATE {table} SET total = :total, counted_at = :at, counting_since = NULL WHERE filter_key = :key"),
                {"key": key, "total": total, "at": counted_at},
            )
            if conn.in_transaction():
                conn.commit()  # the service's connections autocommit; a caller's transaction is ended here
        return int(total), counted_at


def count_jobs(
    conn: Connection,
    conds: list[ColumnElement[bool]],
    mode: str,
    filters: JobFilters | None = None,
    shared: Any = None,
    counts: ListCounts | None = None,
    tz: ZoneInfo | None = None,
) -> tuple[int | None, str, datetime | None]:
    """The total of a list, how it was obtained (pagination.countMode) and, for exact-cached,
    the instant it was exact at (pagination.countedAt)."""
    if mode == "none":
        return None, "none", None
    stmt = select(jobs.c.id).where(*conds)
    if mode == "estimated":
        plan = conn.execute(Explain(stmt)).scalar_one()
        return int(plan[0]["Plan"]["Plan Rows"]), "estimated", None
    count = select(func.count()).select_from(jobs).where(*conds)
    if filters is not None:
        cached = cached_count(conn, filters, shared)
        if cached is not None:
            return cached[0], "exact-cached", cached[1]
        if counts is not None and tz is not None and table_is_big(conn, shared):
            total, counted_at = counts.total(conn, count, ListCounts.key(filters, tz))
            return total, "exact-cached", counted_at
    return int(conn.execute(count).scalar_one()), "exact", None


def page_subquery(
    conds: list[ColumnElement[bool]],
    sort_by: str,
    order: str,
    limit: int | ColumnElement[int],
    *,
    after: tuple[Any, Any] | None = None,
    offset: int = 0,
    selective: bool = False,
    ids_first: bool = False,
) -> tuple[Subquery, list[Any]]:
    """The jobs of one page and the ORDER BY that keeps them in list order: the rows after the
    keyset position `after` (a decoded cursor), or `offset` rows in (page paging). Each row
    carries `sort_key`, the value a cursor resumes after. The list (page_statement) and the
    export (keyset batches) both page through this one query. `selective`: the conditions
    hold a free-text filter (JobFilters.selective), which few rows may pass. `ids_first`: the
    page's ids are found first, then its rows (see STATUS_ONLY_IDS_FIRST)."""
    if sort_by in COMPOUND_SORTS:
        return status_branches_page(conds, sort_by, order, limit, after=after, offset=offset, branches=not selective)
    key, nullable = sort_key(sort_by), sort_by in NULLABLE_SORTS
    page_stmt = select(*([jobs.c.id] if ids_first else [jobs]), key.label("sort_key")).where(*conds)
    if after is not None:
        page_stmt = page_stmt.where(keyset_condition(key, order, after[0], after[1], nullable))
    elif offset:
        page_stmt = page_stmt.offset(offset)
    page_sub = page_stmt.order_by(*_ordering(key, jobs.c.id, order, nullable)).limit(limit).subquery("page")
    if ids_first:
        ids = page_sub.alias("page_ids")
        page_sub = select(jobs, ids.c.sort_key).join(ids, jobs.c.id == ids.c.id).subquery("page")
    return page_sub, _ordering(page_sub.c.sort_key, page_sub.c.id, order, nullable)


# A list filtered by status alone, newest first (the dashboard's "failed jobs"), finds its page's
# ids first, then the rows. Asked for whole rows, the planner weighs heap fetches against walking
# the created_at index and filtering, and at 10,000,000 jobs chose the walk: it went through the
# 300,000 newest jobs (queued and processing) before the first failed one, 42-111 ms. Asked for
# ids, it reads install-indexes' (status, created_at, id) index alone: 0.1 ms, plus one primary-key
# probe per row of the page. Without that index the walk is the same as before.
STATUS_ONLY_IDS_FIRST = frozenset({"created_at"})


# Bounds no priority and no instant lies beyond: the keyset bound of a branch the cursor is not in.
LOWEST = {"priority": -(2**31), "created_at": "-infinity"}
HIGHEST = {"priority": 2**31 - 1, "created_at": "infinity"}
CREATED_AT_TEXT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def compound_key(table: Any, sort_by: str) -> list[ColumnElement[Any]]:
    return [job_status.shown(table.c.status) if c == "status" else table.c[c] for c in COMPOUND_SORTS[sort_by]]


def cursor_value(table: Any, sort_by: str) -> ColumnElement[Any]:
    """`sort_key` of a compound sort: its columns as text, the instant in full-precision UTC
    whatever the session's time zone (compound_value reads it back)."""
    parts = [
        job_status.shown(table.c.status)
        if c == "status"
        else cast(table.c[c], Text)
        if c == "priority"
        else func.to_char(func.timezone("UTC", table.c[c]), CREATED_AT_TEXT)
        for c in COMPOUND_SORTS[sort_by]
    ]
    return array(parts).label("sort_key")


# The stored status values, one branch each (built once: it is the same for every page).
STORED_STATUSES = distinct_values("status", "stored_statuses")


def status_branches_page(
    conds: list[ColumnElement[bool]],
    sort_by: str,
    order: str,
    limit: int | ColumnElement[int],
    *,
    after: tuple[Any, Any] | None = None,
    offset: int = 0,
    branches: bool = True,
) -> tuple[Subquery, list[Any]]:
    """A page ordered by (priority, created_at, id) or (status, priority, created_at, id) from the
    owner's (status, priority, created_at) index, without sorting the table: one branch per
    stored status value (found by a skip scan of the status index, so a value outside the
    vocabulary is listed too) walks the index in (priority, created_at) order, an incremental
    sort adds the id tie-break within equal (priority, created_at), each branch stops after a
    page, and the page is the first rows of the branches' few hundred (a top-N sort).

    branches=False: the same rows, from one filtered scan sorted whole (what a filter that only
    few rows pass wants: walking every branch in order would read most of the index for them)."""
    asc = order == "ASC"
    statuses = STORED_STATUSES
    name = statuses.c.name
    # A branch's status is the outer row's; the plain scan's is each row's own.
    status_of = job_status.shown(name) if branches else job_status.shown(jobs.c.status)
    branch_conds: list[ColumnElement[bool]] = [jobs.c.status == name, *conds] if branches else list(conds)
    outer_conds: list[ColumnElement[bool]] = [name.is_not(None)]
    position = [jobs.c.priority, jobs.c.created_at, jobs.c.id]
    if after is not None:
        # The text parts of the cursor (or of an export's bound sort_key), cast back in SQL.
        parts = Grouping(cast(after[0], ARRAY(Text)))  # (x::text[])[n]: indexing needs the parentheses
        offset_parts = 1 if sort_by == "status" else 0
        bound = [
            cast(parts[1 + offset_parts], Integer),
            cast(parts[2 + offset_parts], DateTime(timezone=True)),
            cast(after[1], jobs.c.id.type),
        ]
        beyond = tuple_(*position) > tuple_(*bound) if asc else tuple_(*position) < tuple_(*bound)
        if sort_by == "priority":
            branch_conds.append(beyond)
        elif not branches:
            at = parts[1]
            branch_conds.append(or_(status_of > at if asc else status_of < at, and_(status_of == at, beyond)))
        else:
            at = parts[1]
            # Branches of statuses before the cursor's are skipped; those after it are read
            # from their start; the cursor's own from the position (an index bound: its prefix).
            outer_conds.append(status_of >= at if asc else status_of <= at)
            edge = LOWEST if asc else HIGHEST
            here = status_of == at
            reach = [
                case((here, bound[0]), else_=literal(edge["priority"], Integer)),
                case((here, bound[1]), else_=cast(literal(edge["created_at"]), DateTime(timezone=True))),
            ]
            prefix = tuple_(*position[:2]) >= tuple_(*reach) if asc else tuple_(*position[:2]) <= tuple_(*reach)
            branch_conds += [prefix, or_(status_of != at, beyond)]
    rows = select(jobs).where(*branch_conds)
    if branches:
        ordered = [col.asc() if asc else col.desc() for col in position]
        branch = rows.order_by(*ordered).limit(limit + offset if offset else limit).lateral("branch")
        # The cursor value of the branches' few hundred rows: cheaper than another subquery
        # layer, whose column proxies cost more Python time per request than the database took.
        page_stmt = select(*list(branch.c), cursor_value(branch, sort_by)).select_from(statuses.join(branch, true()))
        page_stmt, key = page_stmt.where(*outer_conds), compound_key(branch, sort_by) + [branch.c.id]
    else:
        page_stmt, key = rows, compound_key(jobs, sort_by) + [jobs.c.id]
    page_stmt = page_stmt.order_by(*[k.asc() if asc else k.desc() for k in key]).limit(limit)
    if offset:
        page_stmt = page_stmt.offset(offset)
    if branches:
        page_sub = page_stmt.subquery("page")
    else:
        # The cursor value of the page's rows only: to_char on every match of a broad filter
        # cost more than its sort.
        picked = page_stmt.subquery("page_rows")
        page_sub = select(picked, cursor_value(picked, sort_by)).subquery("page")
    outer_key = compound_key(page_sub, sort_by) + [page_sub.c.id]
    return page_sub, [k.asc() if asc else k.desc() for k in outer_key]


def page_statement(
    conds: list[ColumnElement[bool]],
    sort_by: str,
    order: str,
    limit: int,
    *,
    after: tuple[Any, uuid.UUID] | None = None,
    offset: int = 0,
    selective: bool = False,
    ids_first: bool = False,
) -> Select[Any]:
    """One page of jobs with their users, joined only for the page's rows."""
    page_sub, ordering = page_subquery(
        conds, sort_by, order, limit, after=after, offset=offset, selective=selective, ids_first=ids_first
    )
    return with_user(page_sub).order_by(*ordering)


def list_jobs(
    conn: Connection, args: dict[str, Any], tz: ZoneInfo, shared: SharedStats | None = None, counts: ListCounts | None = None
) -> dict[str, Any]:
    filters = JobFilters.from_args(args)
    sort_by, order, limit = args["sort_by"], args["sort_order"], args["limit"]
    conds = filters.conditions(tz, conn)
    cursor = args.get("cursor")
    page = None if cursor else args["page"]
    after = decode_cursor(cursor, sort_by, order) if cursor else None
    # One row more than asked tells whether there is a next page without counting.
    offset = 0 if cursor else (args["page"] - 1) * limit
    ids_first = bool(filters.statuses) and filters.statuses_only and sort_by in STATUS_ONLY_IDS_FIRST
    stmt = page_statement(
        conds, sort_by, order, limit + 1, after=after, offset=offset, selective=filters.selective, ids_first=ids_first
    )
    rows = conn.execute(stmt).mappings().all()
    has_next = len(rows) > limit
    rows = rows[:limit]
    job_list = [job_of(r) for r in rows]
    next_cursor = None
    if has_next and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort_by, order, last["sort_key"], last["id"])
    total, count_mode, counted_at = count_jobs(conn, conds, args["count"], filters, shared, counts, tz)
    return {
        "jobs": job_list,
        "pagination": {
            "total": total,
            "countMode": count_mode,
            "countedAt": counted_at,
            "page": page,
            "limit": limit,
            "totalPages": math.ceil(total / limit) if total is not None else None,
            "hasNext": has_next,
            "hasPrev": bool(cursor) or args["page"] > 1,
            "nextCursor": next_cursor,
        },
    }


# --- one job --------------------------------------------------------------------------


# Built once: constructing the statement cost more Python time than the database took to run it.
# A job_id may itself be a uuid string, hence two rows at most (the row id is preferred).
JOB_BY_ID_OR_JOB_ID = with_user(jobs).where(or_(jobs.c.id == bindparam("row_id"), jobs.c.job_id == bindparam("job_id"))).limit(2)
JOB_BY_JOB_ID = with_user(jobs).where(jobs.c.job_id == bindparam("job_id")).limit(1)


def find_job(conn: Connection, ident: str) -> dict[str, Any] | None:
    """A job by row id, else by its business job_id, with its user."""
    # Longer than the column, or text PostgreSQL cannot hold (NUL, a lone surrogate): no such job.
    if len(ident) > 255 or text_problem(ident) is not None:
        return None
    as_uuid = parse_uuid(ident)
    if as_uuid is None:
        rows = conn.execute(JOB_BY_JOB_ID, {"job_id": ident}).mappings().all()
    else:
        rows = conn.execute(JOB_BY_ID_OR_JOB_ID, {"row_id": as_uuid, "job_id": ident}).mappings().all()
    if not rows:
        return None
    row = next((r for r in rows if as_uuid is not None and r["id"] == as_uuid), rows[0])
    return job_of(row)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job_details(job: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    started = job["processing_started_at"]
    if job["completed_at"] is not None:
        processing = seconds_between(started or job["created_at"], job["completed_at"])
    elif job["status"] == "processing" and started is not None:
        processing = seconds_between(started, now)
    else:
        processing = None
    if started is not None:
        wait = seconds_between(job["created_at"], started)
    elif job["status"] == "queued":
        wait = seconds_between(job["created_at"], now)
    else:
        wait = None
    return {**job, "processingTimeSeconds": processing, "queueWaitSeconds": wait}


FIND_RESULT = text(f"SELECT * FROM {RESULTS_TABLE} WHERE id = :id")


def find_result(conn: Connection, result_id: uuid.UUID) -> dict[str, Any] | None:
    """The result row with whatever columns this deployment's table has."""
    row = conn.execute(FIND_RESULT, {"id": result_id}).mappings().first()
    return dict(row) if row else None
