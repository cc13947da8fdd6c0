"""REST endpoints of job actions: retry one job, or every job a filter matches (dry run first),
the audit log, one action's progress and items, and cancelling what has not been sent.

Every acting route needs the operator role (roles.require_operator: 403 for a viewer) and a
configured transport (503 saying how to configure one otherwise); an Idempotency-Key header
makes a repeated POST answer its first answer. The action and its items are written in the
request's transaction; the dispatcher sends them once it commits (woken by a NOTIFY).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg2.errors
import psycopg2.extras
from flask import Response, current_app
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import func, select

from admin_service.actions import confirm, idempotency
from admin_service.actions.dispatcher import ACTIONS_CHANNEL
from admin_service.actions.schemas import (
    ActionEnvelopeSchema,
    ActionItemsQuerySchema,
    ActionListQuerySchema,
    ActionPageEnvelopeSchema,
    BulkActionSchema,
    DryRunEnvelopeSchema,
    RetryJobSchema,
)
from admin_service.actions.store import OPEN_ACTION_STATES, RETRY, ActionStore, item_json
from admin_service.actions.transports import NOT_CONFIGURED, configured_transport
from admin_service.api import ApiBlueprint
from admin_service.auth import AdminUser, require_admin
from admin_service.clock import utc_now_iso
from admin_service.db.dbapi import Cursor
from admin_service.db.tables import jobs
from admin_service.errors import ApiError, envelope, not_found, unavailable, validation_error
from admin_service.jobs.queries import JobFilters, parse_uuid
from admin_service.jobs.routes import find_job
from admin_service.jobs.schemas import Moment
from admin_service.jobs.serialize import job_of, with_user
from admin_service.roles import current_admin, require_operator
from admin_service.services import services

blp = ApiBlueprint(
    "actions",
    __name__,
    url_prefix="/admin/jobs",
    description="Acting on jobs through the platform's own pipeline: retry, the audit log. Operator role to act.",
)
SECURED: dict[str, Any] = {
    "security": [{"bearerAuth": []}],
    "parameters": [
        {
            "in": "header",
            "name": "Idempotency-Key",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
            "description": "Repeat a POST safely: the same key answers the first answer again.",
        }
    ],
}
SAMPLE = 10
Work = Callable[[SqlConnection, Cursor, AdminUser], tuple[int, Any, str]]


@blp.before_request
def _authenticate() -> None:
    require_admin()


@contextmanager
def write_transaction() -> Iterator[tuple[SqlConnection, Cursor]]:
    """One transaction (the service's pool reads in autocommit) with a dict cursor on it."""
    with services().engine.connect() as conn:
        conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cur = cast(Cursor, raw.cursor(cursor_factory=psycopg2.extras.RealDictCursor))
            try:
                yield conn, cur
            finally:
                cur.close()


def _json(body: dict[str, Any], status: int, replayed: bool = False) -> Response:
    response = cast(Response, current_app.json.response(body))
    response.status_code = status
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def acting(route: str, given: Any, work: Work) -> Response:
    """Run `work` in one transaction, once per Idempotency-Key."""
    settings = services().settings
    transport = configured_transport(settings)
    if transport is None:
        raise unavailable(NOT_CONFIGURED)
    admin = current_admin()
    key = idempotency.request_key()
    with write_transaction() as (conn, cur):
        if key is not None:
            replay = idempotency.claim(cur, settings.admin_schema, admin.id, key, route, idempotency.request_digest(route, given))
            if replay is not None:
                return _json(replay[1], replay[0], replayed=True)
        status, data, message = work(conn, cur, admin)
        body = {"success": True, "message": message, "data": data, "timestamp": utc_now_iso()}
        if key is not None:
            idempotency.store(cur, settings.admin_schema, admin.id, key, status, body)
    return _json(body, status)


def store() -> ActionStore:
    return ActionStore(services().settings.admin_schema)


def create_action(
    cur: Cursor, admin: AdminUser, reason: str, given_filter: Any, snapshot: list[dict[str, Any]], nonce: Any
) -> dict[str, Any]:
    """The action and its items, its first job-action event, and the dispatcher's wake-up (all
    delivered at commit)."""
    used = services()
    actions = store()
    try:
        action_id = actions.create(
            cur,
            kind=RETRY,
            requested_by=admin.id,
            email=admin.email,
            role=admin.user_type,
            reason=reason.strip(),
            given_filter=given_filter,
            jobs=snapshot,
            transport=configured_transport(used.settings) or "",
            nonce=nonce,
        )
    except psycopg2.errors.UniqueViolation:
        raise validation_error(confirm.FIELD, "This token confirmed an action already: run the dry run again.") from None
    used.runtime.event_log.append_and_notify(cur, actions.progress_events(cur, [str(action_id)], "created"))
    cur.execute("SELECT pg_notify(%s, %s)", (ACTIONS_CHANNEL, str(action_id)))
    return detail(cur, action_id, limit=100, offset=0, state=None)


def detail(cur: Cursor, action_id: Any, *, limit: int, offset: int, state: str | None) -> dict[str, Any]:
    actions = store()
    action = actions.get(cur, action_id)
    if action is None:
        raise not_found(f"Action {action_id!s} not found")
    action["items"] = [item_json(row) for row in actions.item_rows(cur, action_id, state, limit, offset)]
    return action


@blp.route("/<string:job_ref>/retry", methods=["POST"])
@require_operator
@blp.arguments(RetryJobSchema)
@blp.response(202, ActionEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 409, 422, 429, 503)
@blp.doc(**SECURED)
def retry_job(args: dict[str, Any], job_ref: str) -> Response:
    """Retry one job

    Hands the job to the platform's pipeline (never rewrites its row): 202 with the action; its
    item becomes `picked_up` when capture sees the job leave `failed`. Only a failed job can be
    retried (409 NOT_RETRYABLE otherwise). Operator role; a reason is required.
    """

    def work(conn: SqlConnection, cur: Cursor, admin: AdminUser) -> tuple[int, Any, str]:
        job = find_job(conn, job_ref)
        if job["status"] != "failed":
            raise ApiError(409, f"Job {job_ref!r} is {job['status']}: only failed jobs can be retried", code="NOT_RETRYABLE")
        busy = store().in_flight(cur, [job["id"]])
        if busy:
            raise ApiError(409, f"Job {job_ref!r} is being retried already (action {busy[str(job['id'])]})", code="NOT_RETRYABLE")
        action = create_action(cur, admin, args["reason"], None, [job], None)
        return 202, action, "Retry requested: the job is handed to the platform"

    return acting(f"retry:{job_ref}", args, work)


@blp.route("/actions", methods=["POST"])
@require_operator
@blp.arguments(BulkActionSchema)
@blp.response(202, ActionEnvelopeSchema)
@blp.alt_response(200, schema=DryRunEnvelopeSchema, description="The dry run's answer")
@blp.errors(400, 401, 403, 409, 422, 429, 503)
@blp.doc(**SECURED)
def bulk_action(args: dict[str, Any]) -> Response:
    """Act on every job a filter matches

    `dry_run: true` answers how many jobs the filter matches (and how many are failed), a
    sample, and a confirmation token bound to the filter, that count, you and a short expiry
    (ACTION_CONFIRM_TTL_S). The real request carries the token: it snapshots the matching jobs
    at that moment (refused above ACTION_MAX_JOBS: a dry run over the cap answers its count with no token; or when the count moved since the dry run)
    and hands each failed one to the platform; the others are items `skipped` with the reason.
    """
    used = services()
    filters = JobFilters.from_args(args["filter"])
    digest = confirm.filter_digest(filters)
    cap = used.settings.action_max_jobs

    def work(conn: SqlConnection, cur: Cursor, admin: AdminUser) -> tuple[int, Any, str]:
        conds = filters.conditions(used.settings.tz, conn)
        key = confirm.load_secret(cur, used.settings.admin_schema)
        if args["dry_run"]:
            count, retryable = conn.execute(
                select(func.count(), func.count().filter(jobs.c.status == "failed")).select_from(jobs).where(*conds)
            ).one()
            # The newest matching jobs, in the list's own order (its created_at index: a sort of
            # every match, or an order on status, cost 600 ms at 50,000 matches).
            page = select(jobs).where(*conds).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(SAMPLE)
            sample = [job_of(row) for row in conn.execute(with_user(page.subquery("sample"))).mappings()]
            over_cap = count > cap
            token, expires = confirm.issue(
                key,
                kind=args["kind"],
                digest=digest,
                count=int(count),
                user_id=admin.id,
                ttl_s=used.settings.action_confirm_ttl_s,
            )
            data = {
                "dry_run": True,
                "count": int(count),
                "retryable": int(retryable),
                "cap": cap,
                "over_cap": over_cap,
                "sample": sample,
                # Over the cap there is nothing to confirm: the request would be refused.
                "confirmation_token": None if over_cap else token,
                "expires_at": None if over_cap else _iso(expires),
            }
            if over_cap:
                return 200, data, f"{count} jobs match, more than one action may cover (ACTION_MAX_JOBS {cap}): narrow the filter"
            return 200, data, f"{count} jobs match, {retryable} of them failed: confirm with the token to retry them"
        confirmation = confirm.verify(key, args["confirmation_token"], kind=args["kind"], digest=digest, user_id=admin.id)
        used_by = store().nonce_used(cur, confirmation.nonce)
        if used_by is not None:
            raise validation_error(confirm.FIELD, f"This token confirmed action {used_by} already: run the dry run again.")
        rows = conn.execute(
            select(jobs.c.id, jobs.c.job_id, jobs.c.status).where(*conds).order_by(jobs.c.created_at, jobs.c.id).limit(cap + 1)
        ).mappings()
        snapshot = [dict(row) for row in rows]
        if len(snapshot) > cap:
            raise too_many(len(snapshot), cap)
        if len(snapshot) != confirmation.count:
            raise ApiError(
                409,
                f"The filter matched {confirmation.count} jobs at the dry run and matches {len(snapshot)} now: run the dry run again",
                code="CONFLICT",
            )
        action = create_action(cur, admin, args["reason"], confirm.normalised_filter(filters), snapshot, confirmation.nonce)
        return 202, action, f"Retry of {len(snapshot)} jobs requested"

    return acting("actions", args, work)


def too_many(count: int, cap: int) -> ApiError:
    return validation_error(
        "filter", f"It matches {count} jobs, more than one action may cover (ACTION_MAX_JOBS {cap}): narrow it."
    )


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()


@blp.route("/actions", methods=["GET"])
@blp.arguments(ActionListQuerySchema, location="query")
@blp.response(200, ActionPageEnvelopeSchema)
@blp.errors(400, 401, 403, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def list_actions(args: dict[str, Any]) -> Response:
    """Audit log of actions

    Newest first; filters by who (requested_by, requested_by_email), kind, state and date.
    """
    used = services()
    where = dict(args)
    range_ = JobFilters(date_from=args.get("date_from"), date_to=args.get("date_to"))
    where["created_from"], where["created_to"] = _range(range_, used.settings.tz)
    with write_transaction() as (_conn, cur):
        rows, total = store().listing(cur, where, args["limit"], (args["page"] - 1) * args["limit"])
    return envelope({"actions": rows, "total": total, "page": args["page"], "limit": args["limit"]}, "Actions")


def _range(filters: JobFilters, tz: Any) -> tuple[Any, Any]:
    """date_from / date_to as the job list reads them (a plain date_to includes that day)."""
    start = filters.date_from.start(tz) if isinstance(filters.date_from, Moment) else None
    end = None
    if isinstance(filters.date_to, Moment):
        from datetime import datetime, time, timedelta

        value = filters.date_to.value
        if filters.date_to.date_only:
            end = datetime.combine(value + timedelta(days=1), time.min, tzinfo=tz)
        else:
            end = filters.date_to.start(tz) + timedelta(microseconds=1)
    if start is not None and end is not None and start >= end:
        raise validation_error("date_from", "date_from must not be after date_to.")
    return start, end


def _action_id(action_id: str) -> Any:
    parsed = parse_uuid(action_id)
    if parsed is None:
        raise not_found(f"Action {action_id!r} not found")
    return parsed


@blp.route("/actions/<string:action_id>", methods=["GET"])
@blp.arguments(ActionItemsQuerySchema, location="query")
@blp.response(200, ActionEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def action_detail(args: dict[str, Any], action_id: str) -> Response:
    """One action

    Its state, counts per item state and its items (paged by limit/offset, filtered by item_state).
    """
    with write_transaction() as (_conn, cur):
        data = detail(cur, _action_id(action_id), limit=args["limit"], offset=args["offset"], state=args.get("item_state"))
    return envelope(data, "Action")


@blp.route("/actions/<string:action_id>/cancel", methods=["POST"])
@require_operator
@blp.response(200, ActionEnvelopeSchema)
@blp.errors(401, 403, 404, 409, 422, 429, 503)
@blp.doc(**SECURED)
def cancel_action(action_id: str) -> Response:
    """Cancel an action

    Skips its items not handed to the platform yet; what was sent stays sent (the platform has
    it: its worker cannot be stopped, see the README). 409 when nothing is left to cancel.
    """
    parsed = _action_id(action_id)

    def work(_conn: SqlConnection, cur: Cursor, admin: AdminUser) -> tuple[int, Any, str]:
        actions = store()
        services().runtime.event_log.lock_for_append(cur)  # before the items: capture's lock order
        action = actions.get(cur, parsed)
        if action is None:
            raise not_found(f"Action {action_id!r} not found")
        if action["state"] not in OPEN_ACTION_STATES:
            raise ApiError(409, f"Action {action_id} is {action['state']}: nothing left to cancel", code="CONFLICT")
        skipped = actions.cancel(cur, parsed, admin.id, admin.email)
        if not skipped:
            raise ApiError(
                409,
                f"Every item of action {action_id} was handed to the platform already: nothing left to cancel",
                code="CONFLICT",
            )
        services().runtime.event_log.append_and_notify(cur, actions.progress_events(cur, [str(parsed)], "cancelled"))
        return 200, detail(cur, parsed, limit=100, offset=0, state=None), f"Cancelled: {skipped} items will not be sent"

    return acting(f"cancel:{action_id}", {}, work)
