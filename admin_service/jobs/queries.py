"""SQL for the job list, details and results. Every request path is index-friendly:
users are joined only for the rows of a page, deep pages use a keyset cursor."""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, and_, func, or_, select, text
from sqlalchemy.sql.elements import ColumnElement

from admin_service.db.tables import JOB_COLUMNS, jobs, users
from admin_service.errors import validation_error
from admin_service.jobs import status as job_status
from admin_service.jobs.schemas import Moment


def escape_like(value: str) -> str:
    """Make % and _ in user input match themselves (the old service let them wildcard)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(value: str) -> str:
    return f"%{escape_like(value)}%"


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
        )

    def conditions(self, tz: ZoneInfo) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if self.statuses:
            conds.append(jobs.c.status.in_(job_status.stored_values(self.statuses)))
        if self.user_id is not None:
            conds.append(jobs.c.user_id == self.user_id)
        if self.assessment_name:
            conds.append(jobs.c.assessment_name.ilike(contains(self.assessment_name), escape="\\"))
        user_conds = []
        if self.user_email:
            user_conds.append(users.c.email.ilike(contains(self.user_email), escape="\\"))
        if self.user_username:
            user_conds.append(users.c.username.ilike(contains(self.user_username), escape="\\"))
        if user_conds:
            conds.append(jobs.c.user_id.in_(select(users.c.id).where(*user_conds)))
        if self.search:
            conds.append(self._search_condition(self.search))
        if self.date_from is not None:
            conds.append(jobs.c.created_at >= self.date_from.start(tz))
        if self.date_to is not None:
            if self.date_to.date_only:
                conds.append(jobs.c.created_at < self.date_to.start(tz) + timedelta(days=1))
            else:
                conds.append(jobs.c.created_at <= self.date_to.start(tz))
        return conds

    @staticmethod
    def _search_condition(term: str) -> ColumnElement[bool]:
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
        return or_(*matches)

    @property
    def is_empty(self) -> bool:
        return self == JobFilters()


# --- keyset cursor ---------------------------------------------------------------------


def encode_cursor(sort_by: str, order: str, value: Any, row_id: uuid.UUID) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([sort_by, order, value, str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort_by: str, order: str) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        c_sort, c_order, value, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        row_uuid = uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise validation_error("cursor", "Not a cursor this service issued.") from None
    if c_sort != sort_by or c_order != order:
        raise validation_error("cursor", f"The cursor was issued for sort_by={c_sort}&sort_order={c_order}.")
    if value is not None and sort_by.endswith("_at"):
        try:
            value = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise validation_error("cursor", "Not a cursor this service issued.") from None
    elif value is not None and sort_by == "priority" and not isinstance(value, int):
        raise validation_error("cursor", "Not a cursor this service issued.")
    elif value is not None and sort_by == "status" and not isinstance(value, str):
        raise validation_error("cursor", "Not a cursor this service issued.")
    return value, row_uuid


def keyset_condition(sort_by: str, order: str, value: Any, row_id: uuid.UUID) -> ColumnElement[bool]:
    """Rows after (value, id) in `ORDER BY col <order> NULLS LAST, id <order>`."""
    col = jobs.c[sort_by]
    after_id = jobs.c.id > row_id if order == "ASC" else jobs.c.id < row_id
    if value is None:
        return and_(col.is_(None), after_id)
    beyond = col > value if order == "ASC" else col < value
    return or_(beyond, and_(col == value, after_id), col.is_(None))


def _ordering(sort_by: str, order: str, source: Any) -> list[Any]:
    col, row_id = source.c[sort_by], source.c.id
    if order == "ASC":
        return [col.asc().nulls_last(), row_id.asc()]
    return [col.desc().nulls_last(), row_id.desc()]


# --- list --------------------------------------------------------------------------------


def _user_of(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("user_ref_id") is None:
        return None
    return {"id": row["user_ref_id"], "email": row["user_email"], "username": row["user_username"]}


def job_row(row: Any) -> dict[str, Any]:
    job = {name: row[name] for name in JOB_COLUMNS}
    job["status"] = job_status.normalize(job["status"])
    return job


def with_user(stmt_source: Any) -> Select[Any]:
    """Select a job source (table or page subquery) with its user, joined by primary key."""
    return select(
        stmt_source,
        users.c.id.label("user_ref_id"),
        users.c.email.label("user_email"),
        users.c.username.label("user_username"),
    ).select_from(stmt_source.outerjoin(users, users.c.id == stmt_source.c.user_id))


def count_jobs(conn: Connection, conds: list[ColumnElement[bool]], mode: str) -> int | None:
    if mode == "none":
        return None
    stmt = select(jobs.c.id).where(*conds)
    if mode == "estimated":
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
        return int(plan[0]["Plan"]["Plan Rows"])
    return int(conn.execute(select(func.count()).select_from(jobs).where(*conds)).scalar_one())


def list_jobs(conn: Connection, args: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    filters = JobFilters.from_args(args)
    sort_by, order, limit = args["sort_by"], args["sort_order"], args["limit"]
    conds = filters.conditions(tz)
    page_stmt = select(jobs).where(*conds)
    cursor = args.get("cursor")
    page = None if cursor else args["page"]
    if cursor:
        value, row_id = decode_cursor(cursor, sort_by, order)
        page_stmt = page_stmt.where(keyset_condition(sort_by, order, value, row_id))
    else:
        page_stmt = page_stmt.offset((args["page"] - 1) * limit)
    # One row more than asked tells whether there is a next page without counting.
    page_sub = page_stmt.order_by(*_ordering(sort_by, order, jobs)).limit(limit + 1).subquery("page")
    stmt = with_user(page_sub).order_by(*_ordering(sort_by, order, page_sub))
    rows = conn.execute(stmt).mappings().all()
    has_next = len(rows) > limit
    rows = rows[:limit]
    job_list = [{**job_row(r), "user": _user_of(r)} for r in rows]
    next_cursor = None
    if has_next and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort_by, order, last[sort_by], last["id"])
    total = count_jobs(conn, conds, args["count"])
    return {
        "jobs": job_list,
        "pagination": {
            "total": total,
            "countMode": args["count"],
            "page": page,
            "limit": limit,
            "totalPages": math.ceil(total / limit) if total is not None else None,
            "hasNext": has_next,
            "hasPrev": bool(cursor) or args["page"] > 1,
            "nextCursor": next_cursor,
        },
    }


# --- one job --------------------------------------------------------------------------


def find_job(conn: Connection, ident: str) -> dict[str, Any] | None:
    """A job by row id, else by its business job_id, with its user."""
    if len(ident) > 255:
        return None
    as_uuid = parse_uuid(ident)
    match = jobs.c.job_id == ident
    if as_uuid is not None:
        # A job_id may itself be a uuid string: prefer the row id when both exist.
        match = or_(jobs.c.id == as_uuid, match)
    stmt = with_user(jobs).where(match).limit(2)
    rows = conn.execute(stmt).mappings().all()
    if not rows:
        return None
    row = next((r for r in rows if as_uuid is not None and r["id"] == as_uuid), rows[0])
    return {**job_row(row), "user": _user_of(row)}


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


def find_result(conn: Connection, result_id: uuid.UUID) -> dict[str, Any] | None:
    """The result row with whatever columns this deployment's table has."""
    row = conn.execute(text("SELECT * FROM archive.analysis_results WHERE id = :id"), {"id": result_id}).mappings().first()
    return dict(row) if row else None
