"""GET /admin/users/<user_id>/jobs: one user's jobs, in the job list's envelope and paging."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from sqlalchemy import Connection, exists, select

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.db.tables import jobs, users
from admin_service.errors import envelope, not_found
from admin_service.jobs import queries
from admin_service.jobs.schemas import UserJobListEnvelopeSchema, UserJobsQuerySchema
from admin_service.services import services

blp = ApiBlueprint(
    "users",
    __name__,
    url_prefix="/admin/users",
    description="Users' jobs (the old admin dashboard's call). Admin token required.",
)


@blp.before_request
def _authenticate() -> None:
    require_admin()


def find_user(conn: Connection, user_id: uuid.UUID) -> dict[str, Any] | None:
    row = conn.execute(select(users.c.id, users.c.email, users.c.username).where(users.c.id == user_id)).mappings().first()
    return dict(row) if row else None


def has_jobs(conn: Connection, user_id: uuid.UUID) -> bool:
    return bool(conn.execute(select(exists().where(jobs.c.user_id == user_id))).scalar())


@blp.route("/<string:user_id>/jobs")
@blp.arguments(UserJobsQuerySchema, location="query")
@blp.response(200, UserJobListEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def user_jobs(args: dict[str, Any], user_id: str) -> Response:
    """A user's jobs

    The jobs of the user `user_id` (uuid), with the list's paging (page+limit or cursor), sort,
    status filter and count modes, in its envelope, plus `data.user`. 404 NOT_FOUND when no user
    has that id and no job names it (the jobs of a deleted user stay listed, with `user` null).
    """
    as_uuid = queries.parse_uuid(user_id)
    if as_uuid is None:
        raise not_found(f"User {user_id!r} not found")
    used = services()
    with used.engine.connect() as conn:
        user = find_user(conn, as_uuid)
        if user is None and not has_jobs(conn, as_uuid):
            raise not_found(f"User {user_id!r} not found")
        data = queries.list_jobs(conn, {**args, "user_id": as_uuid}, used.settings.tz)
    return envelope({**data, "user": user}, "User jobs retrieved")
