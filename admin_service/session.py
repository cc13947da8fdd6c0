"""GET /admin/session: who the token's user is and what they may do (the dashboard reads it
to hide what a viewer may not do)."""

from __future__ import annotations

from flask import Response
from marshmallow import Schema, fields

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.errors import envelope
from admin_service.jobs.schemas import EnvelopeSchema
from admin_service.roles import OPERATOR, VIEWER, role_of
from admin_service.services import services

blp = ApiBlueprint("session", __name__, url_prefix="/admin", description="The signed-in admin and their role.")


class SessionUserSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(allow_none=True, required=True)
    username = fields.String(allow_none=True, required=True)
    user_type = fields.String(required=True)


class PermissionsSchema(Schema):
    view = fields.Boolean(required=True)
    act = fields.Boolean(required=True, metadata={"description": "may retry jobs (and take other actions)"})


class SessionSchema(Schema):
    user = fields.Nested(SessionUserSchema, required=True)
    role = fields.String(required=True, metadata={"enum": [VIEWER, OPERATOR]})
    permissions = fields.Nested(PermissionsSchema, required=True)


class SessionEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(SessionSchema, required=True)


@blp.route("/session")
@blp.response(200, SessionEnvelopeSchema)
@blp.errors(401, 403, 429, 503)
@blp.doc(security=[{"bearerAuth": []}])
def session() -> Response:
    """The signed-in admin

    The token's user, their role (VIEW_ROLES / ACTION_ROLES by user_type) and what it allows.
    """
    admin = require_admin()
    role = role_of(services().settings, admin.user_type)
    data = {
        "user": {"id": admin.id, "email": admin.email, "username": admin.username, "user_type": admin.user_type},
        "role": role,
        "permissions": {"view": True, "act": role == OPERATOR},
    }
    return envelope(data, "Session")
