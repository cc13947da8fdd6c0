"""Tokens signed with the tests' secret, and the header that carries them."""

from __future__ import annotations

import time
from typing import Any

from admin_service.auth import sign_token
from admin_service.config import Settings, load_settings
from tests.support.settings import TEST_SECRET


def token_for(user: dict[str, Any], settings_: Settings | None = None, **kwargs: Any) -> str:
    settings_ = settings_ or load_settings({"JWT_SECRET": TEST_SECRET})
    return sign_token(settings_, user["id"], **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_for(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"id": user_id, "sub": user_id, "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}
