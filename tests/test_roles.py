"""Roles: VIEW_ROLES may look, ACTION_ROLES may also act; the session says which (the dashboard
hides what a viewer may not do). The action routes' refusals are in tests/actions/."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from admin_service.config import ConfigError, load_settings
from tests.support.factories import Data
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import bearer, token_for


def session_of(client: Any, user: dict[str, Any]) -> Any:
    return client.get("/admin/session", headers=bearer(token_for(user)))


def test_by_default_admins_view_and_superadmins_act(client: Any, data: Data) -> None:
    admin = data.user(user_type="admin")
    superadmin = data.user(user_type="superadmin")

    viewer = session_of(client, admin)
    operator = session_of(client, superadmin)

    assert viewer.status_code == 200
    assert viewer.json["data"]["role"] == "viewer"
    assert viewer.json["data"]["permissions"] == {"view": True, "act": False}
    assert viewer.json["data"]["user"]["user_type"] == "admin"
    assert operator.json["data"]["role"] == "operator"
    assert operator.json["data"]["permissions"] == {"view": True, "act": True}


def test_configured_roles_decide_who_signs_in_and_who_acts(database_url: str, engine: Engine, data: Data) -> None:
    client = app_with(database_url, engine, VIEW_ROLES="moderator", ACTION_ROLES="admin").test_client()
    moderator, admin, superadmin, user = (data.user(user_type=t) for t in ("moderator", "admin", "superadmin", "user"))

    assert session_of(client, moderator).json["data"]["role"] == "viewer"
    assert session_of(client, admin).json["data"]["role"] == "operator"  # who may act may look
    refused = session_of(client, superadmin)
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "FORBIDDEN"
    assert session_of(client, user).status_code == 403


def test_a_bad_role_list_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="ACTION_ROLES"):
        load_settings({"JWT_SECRET": TEST_SECRET, "ACTION_ROLES": "admin, Super Admin"})
