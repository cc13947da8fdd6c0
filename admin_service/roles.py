"""Roles: who may look and who may also act, from the token user's `user_type`.

Two roles, each a list of user types in the configuration: VIEW_ROLES (default admin,
superadmin: today's admins keep watching) and ACTION_ROLES (default superadmin only: acting on
the platform's jobs is new, and an upgrade should not give every admin that power unasked).
A user of neither list is refused at sign-in (auth.py); one of ACTION_ROLES is an operator.

Every route that changes something goes through `require_operator` (403 in the envelope for a
viewer); the dashboard reads the same verdict from GET /admin/session and hides what a viewer
may not do. Any feature that acts (job actions, alert acknowledgement) reuses this module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g

from admin_service.auth import AdminUser, require_admin
from admin_service.config import Settings
from admin_service.errors import ApiError
from admin_service.services import services

VIEWER = "viewer"
OPERATOR = "operator"

F = TypeVar("F", bound=Callable[..., Any])


def role_of(settings: Settings, user_type: str) -> str:
    """operator (may act) or viewer (may only look): for a user already let in."""
    return OPERATOR if settings.may_act(user_type) else VIEWER


def current_admin() -> AdminUser:
    """The admin of this request (authenticated once: a blueprint's before_request may have)."""
    admin = getattr(g, "admin", None)
    return admin if isinstance(admin, AdminUser) else require_admin()


def not_an_operator(settings: Settings, admin: AdminUser) -> ApiError:
    allowed = ", ".join(settings.action_roles) or "none"
    return ApiError(
        403,
        f"Acting on jobs needs the operator role (user types allowed by ACTION_ROLES: {allowed}); "
        f"you are signed in as {admin.user_type}, a viewer",
    )


def require_operator(view: F) -> F:
    """Decorate a view that acts: it runs only for an operator, a viewer gets 403 FORBIDDEN."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        admin = current_admin()
        settings = services().settings
        if role_of(settings, admin.user_type) != OPERATOR:
            raise not_an_operator(settings, admin)
        return view(*args, **kwargs)

    return cast(F, guarded)
