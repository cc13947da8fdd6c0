"""Rate limiting of the admin routes, keyed by the admin's user id (client IP before auth).

Storage is memory:// by default (one process) or Redis, shared by every worker and
instance. When Redis is down the limiter fails open (requests pass, a warning is logged) unless
RATE_LIMIT_FAIL_OPEN=false.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from admin_service.auth import authenticator
from admin_service.config import Settings


def rate_limit_key() -> str:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else request.args.get("access_token")
    # Only a verified signature may pick the bucket: a forged `sub` must not dodge the limit.
    user_id = authenticator().user_id_if_valid(token)
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address()}"


def make_limiter(app: Flask, settings: Settings) -> Limiter:
    app.config.update(
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 1}
        if settings.rate_limit_storage_uri.startswith("redis")
        else {},
        RATELIMIT_SWALLOW_ERRORS=settings.rate_limit_fail_open,
        RATELIMIT_KEY_PREFIX="admin-service",
    )
    limiter = Limiter(rate_limit_key, app=app, strategy="moving-window")
    return limiter
