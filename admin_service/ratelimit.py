"""Rate limiting of the admin routes, keyed by the admin's user id (client IP before auth).

Storage is memory:// by default (one process) or Redis, shared by every worker and
instance. When Redis is down the limiter fails open unless RATE_LIMIT_FAIL_OPEN=false:
requests keep being served, each process limits on its own in memory meanwhile (one warning
is logged, and the store is re-checked with backoff until it answers again). Failing closed,
requests are refused with 503 SERVICE_UNAVAILABLE while the store is unreachable.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.errors import StorageError

from admin_service.config import Settings
from admin_service.errors import RETRY_AFTER_SECONDS, ApiError, error_response
from admin_service.services import services

log = logging.getLogger("admin_service.ratelimit")
# The storage scope every admin route draws on: one budget per client, not one per route.
ADMIN_SCOPE = "admin-api"


def rate_limit_key() -> str:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else request.args.get("access_token")
    # Only a verified signature may pick the bucket: a forged `sub` must not dodge the limit.
    user_id = services().authenticator.user_id_if_valid(token)
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address()}"


def storage_unavailable(exc: StorageError) -> ResponseReturnValue:
    log.warning("rate-limit storage unreachable: %s", type(exc.storage_error).__name__)
    return error_response(
        ApiError(503, "The rate-limit store is unreachable; retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    )


def make_limiter(app: Flask, settings: Settings) -> Limiter:
    # Storage errors surface as limits' StorageError (not the driver's), answered with a 503 below.
    options: dict[str, object] = {"wrap_exceptions": True}
    if settings.rate_limit_storage_uri.startswith("redis"):
        options.update(socket_connect_timeout=1, socket_timeout=1)
    app.config.update(
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS=options,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=settings.rate_limit_fail_open,
        RATELIMIT_SWALLOW_ERRORS=settings.rate_limit_fail_open,
        RATELIMIT_KEY_PREFIX="admin-service",
    )
    limiter = Limiter(rate_limit_key, app=app, strategy="moving-window")
    app.register_error_handler(StorageError, storage_unavailable)
    return limiter


def limit_admin_routes(limiter: Limiter, settings: Settings, *blueprints: Blueprint) -> None:
    """Apply RATE_LIMIT to every route of these blueprints as one shared budget per client.

    `limiter.limit(...)(blueprint)` would give each route its own bucket, so a client spreading
    its requests over stats, list, details and streams would get RATE_LIMIT several times over.
    """
    shared = limiter.shared_limit(lambda: settings.rate_limit, scope=ADMIN_SCOPE)
    for blueprint in blueprints:
        shared(blueprint)
