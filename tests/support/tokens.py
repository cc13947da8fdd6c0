"""Tokens signed with the tests' secret, and the header that carries them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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


def signed_raw(payload_json: str, secret: str = TEST_SECRET) -> str:
    """An HS256 token whose payload is this exact JSON text, correctly signed: for claims
    PyJWT's encoder would not write as given (10**400, NaN, a lone surrogate escape)."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(payload_json.encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def claims_json(user_id: str, **claims: str) -> str:
    """A payload with these claims as JSON text (None drops a claim); id, sub, iat and exp
    (now + 10 min) by default."""
    now = int(time.time())
    texts: dict[str, str | None] = {
        "id": json.dumps(user_id),
        "sub": json.dumps(user_id),
        "iat": str(now),
        "exp": str(now + 600),
        **claims,
    }
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in texts.items() if v is not None) + "}"


class Later:
    """A NumericDate `seconds` from when the token is made (not from when tests are collected)."""

    def __init__(self, seconds: float, as_float: bool = False) -> None:
        self.seconds = seconds
        self.as_float = as_float

    def text(self) -> str:
        at = time.time() + self.seconds
        return repr(at) if self.as_float else str(int(at))


def token_with(user_id: str, claims: dict[str, Any]) -> str:
    """A correctly signed token with these claims (JSON text, a Later, or a JSON string of a Later)."""
    texts = {}
    for name, value in claims.items():
        if isinstance(value, Later):
            value = value.text()
        elif isinstance(value, tuple):  # (Later,): the NumericDate written as a JSON string
            value = json.dumps(value[0].text())
        texts[name] = value
    return signed_raw(claims_json(user_id, **texts))
