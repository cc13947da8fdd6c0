"""Rate limiting of the admin routes, keyed by the admin's user id (client IP before auth).

Storage is the service's own PostgreSQL by default (`database://`, limits_store.py) or Redis:
either way shared by every worker and instance, so RATE_LIMIT and AUTH_FAILURE_LIMIT are what a
client gets from the whole deployment. `memory://` counts per process (one worker only: each
worker would grant the whole limit). When the store is down the limiter fails open unless
RATE_LIMIT_FAIL_OPEN=false: requests keep being served, each process limits on its own in
memory meanwhile (one warning is logged, and the store is re-checked with backoff until it
answers again). Failing closed, requests are refused with 503 SERVICE_UNAVAILABLE while the
store is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.errors import StorageError
from sqlalchemy import Engine

from admin_service.auth import AuthError, AuthFailure
from admin_service.config import Settings
from admin_service.errors import ApiError, register_translation, unavailable
from admin_service.limits_store import SCHEME as DATABASE_SCHEME
from admin_service.services import services

log = logging.getLogger("admin_service.ratelimit")
# The storage scope every admin route draws on: one budget per client, not one per route.
ADMIN_SCOPE = "admin-api"
# Exports draw on a budget of their own (EXPORT_RATE_LIMIT): one export reads up to
# EXPORT_MAX_ROWS rows, which is not one page view.
EXPORT_SCOPE = "admin-export"


def rate_limit_key() -> str:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else request.args.get("access_token")
    # Only a verified signature may pick the bucket: a forged `sub` must not dodge the limit.
    try:
        user_id = services().authenticator.user_id_if_valid(token)
    except Exception as exc:  # flask-limiter lets a request whose key raises pass unlimited
        log.warning("rate-limit key: token not readable (%s); keyed by address", type(exc).__name__)
        user_id = None
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address()}"


STORE_UNREACHABLE = "The rate-limit store is unreachable; retry shortly"


def storage_unavailable(exc: StorageError) -> ApiError:
    log.warning("rate-limit storage unreachable: %s", type(exc.storage_error).__name__)
    return unavailable(STORE_UNREACHABLE)


# Also when the store dies in an after_request hook (the limiter's headers): see errors.py.
register_translation(StorageError, storage_unavailable)


class FailedAuthGuard:
    """Throttles token guessing per client address (the Authenticator's guard).

    Every token that fails verification counts against AUTH_FAILURE_LIMIT for its address,
    in the rate-limit store (Redis: shared by every worker and instance). Over the limit,
    that address's tokens that never verified before (verified.py: on any worker or instance,
    until their exp) are refused with 429 and Retry-After, before any check: guessing stops
    paying, while admins whose tokens were already accepted keep working. A store that is down fails open or closed as
    RATE_LIMIT_FAIL_OPEN says, like the rate limit.
    """

    def __init__(self, limiter: Limiter, settings: Settings) -> None:
        self._limiter = limiter  # its strategy falls back to memory when Redis is down
        self._limit = parse(settings.auth_failure_limit)
        self._fail_open = settings.rate_limit_fail_open

    @staticmethod
    def _key(address: str) -> tuple[str, str]:
        return ("auth-failures", address)

    def refuse_if_blocked(self, address: str, exempt: Callable[[], bool]) -> None:
        """Refuse (429) a token from a blocked address unless `exempt()`: it verified before."""
        try:
            strategy = self._limiter.limiter
            if strategy.test(self._limit, *self._key(address)):
                return
            reset_at = strategy.get_window_stats(self._limit, *self._key(address)).reset_time
        except Exception as exc:  # the store is unreachable
            if self._fail_open:
                return
            raise AuthError(AuthFailure.UNAVAILABLE, STORE_UNREACHABLE) from exc
        if exempt():
            return
        raise AuthError(
            AuthFailure.THROTTLED,
            "Too many failed authentication attempts from this address; retry later",
            retry_after=max(1, int(reset_at - time.time()) + 1),
        )

    def failed(self, address: str) -> None:
        try:
            self._limiter.limiter.hit(self._limit, *self._key(address))
        except Exception:  # counting must never turn a 401 into a 500
            log.warning("could not count a failed authentication (rate-limit store unreachable)")


# flask-limiter writes its window's reset as Retry-After on every answer it has a limit for
# (200s and 401s too), and on an answer that already has one (an outage's 503: 5 s) it writes the
# later of the two. It writes it under this name instead; `retry_after_on_429_only` decides.
LIMITER_RETRY_AFTER = "X-Limiter-Retry-After"


def retry_after_on_429_only(response: Response) -> Response:
    """Retry-After on a 429 the limit refused (its window's reset), never on other answers; an
    answer that set its own (a 503's, the auth guard's 429) keeps it."""
    reset_in = response.headers.pop(LIMITER_RETRY_AFTER, None)
    if response.status_code == 429 and reset_in is not None and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(max(1, int(reset_in)))
    return response


class OneLineStoreFailures(logging.Filter):
    """flask-limiter logs a store call that failed while another request was switching to the
    in-memory fallback (the limit, or the headers after it) with its whole traceback, at ERROR:
    one warning line says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        # "Failed to rate limit. Swallowing error", "Failed to update rate limit headers. ...".
        if record.exc_info and record.getMessage().startswith("Failed to"):
            error = record.exc_info[1]
            what = record.getMessage().split(".")[0].lower()
            record.msg, record.args = "rate-limit store unreachable (%s): %s", (type(error).__name__, what)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def make_limiter(app: Flask, settings: Settings, engine: Engine) -> Limiter:
    # Storage errors surface as limits' StorageError (not the driver's), answered with a 503 (above).
    options: dict[str, object] = {"wrap_exceptions": True}
    if settings.rate_limit_storage_uri.startswith("redis"):
        options.update(socket_connect_timeout=1, socket_timeout=1)
    elif settings.rate_limit_storage_uri.startswith(f"{DATABASE_SCHEME}://"):
        options.update(engine=engine, schema=settings.admin_schema, local_batch=settings.rate_limit_local_batch)
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OneLineStoreFailures) for f in limiter_log.filters):
        limiter_log.addFilter(OneLineStoreFailures())
    # Registered before the limiter's own hook, so it runs after it (Flask runs them in reverse).
    app.after_request(retry_after_on_429_only)
    app.config.update(
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_HEADER_RETRY_AFTER=LIMITER_RETRY_AFTER,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS=options,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=settings.rate_limit_fail_open,
        RATELIMIT_SWALLOW_ERRORS=settings.rate_limit_fail_open,
        RATELIMIT_KEY_PREFIX="admin-service",
    )
    return Limiter(rate_limit_key, app=app, strategy="moving-window")


def limit_admin_routes(limiter: Limiter, settings: Settings, *blueprints: Blueprint) -> None:
    """Apply RATE_LIMIT to every route of these blueprints as one shared budget per client.

    `limiter.limit(...)(blueprint)` would give each route its own bucket, so a client spreading
    its requests over stats, list, details and streams would get RATE_LIMIT several times over.
    """
    shared = limiter.shared_limit(lambda: settings.rate_limit, scope=ADMIN_SCOPE)
    for blueprint in blueprints:
        shared(blueprint)


def limit_exports(limiter: Limiter, settings: Settings, blueprint: Blueprint) -> None:
    """Apply EXPORT_RATE_LIMIT to the export blueprint, apart from RATE_LIMIT."""
    limiter.shared_limit(lambda: settings.export_rate_limit, scope=EXPORT_SCOPE)(blueprint)
