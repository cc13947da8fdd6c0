"""Token verification and the admin guard, shared by REST, SSE and Socket.IO.

Tokens are verified locally with PyJWT against a fixed algorithm list (never the token's
own header), then the token's user must exist, be active and be an admin. That lookup is
cached for AUTH_CACHE_SECONDS: a deactivated admin is refused within that time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from cachetools import TLRUCache, TTLCache
from flask import g, request
from sqlalchemy import Engine, select

from admin_service.config import Settings
from admin_service.db.tables import users
from admin_service.errors import ApiError
from admin_service.services import services

log = logging.getLogger("admin_service.auth")

ADMIN_TYPES = frozenset({"admin", "superadmin"})
MAX_TOKEN_LENGTH = 8192
JWT_LEEWAY_S = 5
# How long a verified token's claims are reused without checking its signature again.
CLAIMS_CACHE_SECONDS = 60


@dataclass(frozen=True)
class AdminUser:
    id: str
    email: str | None
    username: str | None
    user_type: str
    expires_at: float | None  # the token's exp (epoch seconds); streams end there


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="admin-service"'})


def forbidden() -> ApiError:
    return ApiError(403, "Admin access required")


class FailedAuthGuard:
    """Throttles token guessing per client address.

    Every token that fails verification counts against AUTH_FAILURE_LIMIT for its address,
    in the rate-limit store (Redis: shared by every worker and instance). Over the limit,
    that address's tokens that did not verify here before are refused with 429 and
    Retry-After, before any check: guessing stops paying, while admins whose tokens were
    already accepted keep working. A store that is down fails open or closed as
    RATE_LIMIT_FAIL_OPEN says, like the rate limit.
    """

    def __init__(self, limiter: Any, settings: Settings) -> None:
        from limits import parse

        self._limiter = limiter  # flask-limiter's Limiter: its strategy falls back to memory when Redis is down
        self._limit = parse(settings.auth_failure_limit)
        self._fail_open = settings.rate_limit_fail_open

    def _key(self, address: str) -> tuple[str, str]:
        return ("auth-failures", address)

    def refuse_if_blocked(self, address: str) -> None:
        try:
            strategy = self._limiter.limiter
            if strategy.test(self._limit, *self._key(address)):
                return
            reset_at = strategy.get_window_stats(self._limit, *self._key(address)).reset_time
        except Exception as exc:  # the store is unreachable
            if self._fail_open:
                return
            raise ApiError(503, "The rate-limit store is unreachable; retry shortly", headers={"Retry-After": "5"}) from exc
        retry_after = max(1, int(reset_at - time.time()) + 1)
        raise ApiError(
            429,
            "Too many failed authentication attempts from this address; retry later",
            headers={"Retry-After": str(retry_after)},
        )

    def failed(self, address: str) -> None:
        try:
            self._limiter.limiter.hit(self._limit, *self._key(address))
        except Exception:  # counting must never turn a 401 into a 500
            log.warning("could not count a failed authentication (rate-limit store unreachable)")


def parse_bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 saying what is wrong."""
    if not header:
        raise unauthorized("Authentication required")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise unauthorized("Authorization scheme must be Bearer")
    return check_token_shape(token.strip())


def check_token_shape(token: str) -> str:
    if not token:
        raise unauthorized("Authentication required")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2 or not token.isascii():
        raise unauthorized("Invalid or expired token")
    return token


class Authenticator:
    """Turns a bearer token into an AdminUser, or raises 401/403/503 as ApiError."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._lock = threading.Lock()
        self._cache_ttl = ttl = max(settings.auth_cache_seconds, 0.001)
        self._users: TTLCache[str, dict[str, Any] | None] = TTLCache(maxsize=10_000, ttl=ttl)
        # The auth service's verdicts last AUTH_CACHE_SECONDS, never beyond the token's own exp.
        self._remote: TLRUCache[str, AdminUser] = TLRUCache(maxsize=10_000, ttu=self._remote_until, timer=time.time)
        # Verified claims by token: a dashboard sends the same token with every request, and the
        # rate limiter and the guard both need its subject. Keyed by the whole token (signature
        # included), so only a token that verified here before is ever a hit; exp is still
        # checked on every hit.
        self._claims: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=4096, ttl=CLAIMS_CACHE_SECONDS)
        self._key = settings.jwt_secret if settings.jwt_algorithms[0].startswith("HS") else settings.jwt_public_key
        self._http = requests.Session()
        # Set by create_app once the rate limiter exists (its store counts failures).
        self.guard: FailedAuthGuard | None = None

    # -- local JWT -------------------------------------------------------------------
    def decode(self, token: str, remember: bool = True) -> dict[str, Any]:
        """Verified claims of a token (signature, exp, iss, aud) or a 401. Only the guard's path
        remembers a token (`verified_before` then holds for it)."""
        with self._lock:
            claims = self._claims.get(token)
        if claims is not None:
            if float(claims["exp"]) + JWT_LEEWAY_S <= time.time():
                raise unauthorized("Invalid or expired token")
            return claims
        claims = self._verify(token)
        if remember:
            with self._lock:
                self._claims[token] = claims
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        options = {"require": ["exp"], "verify_aud": self.settings.jwt_audience is not None}
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=list(self.settings.jwt_algorithms),
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                options=options,
                leeway=JWT_LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("Invalid or expired token") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise unauthorized("Invalid or expired token") from None

    @staticmethod
    def subject(claims: dict[str, Any]) -> str:
        raw = claims.get("id") or claims.get("sub")
        try:
            return str(uuid.UUID(str(raw)))
        except (ValueError, TypeError):
            raise unauthorized("Invalid or expired token") from None

    def _load_user(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            if user_id in self._users:
                return self._users[user_id]
        stmt = select(users.c.id, users.c.email, users.c.username, users.c.user_type, users.c.is_active).where(
            users.c.id == uuid.UUID(user_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        found = dict(row) if row else None
        with self._lock:
            self._users[user_id] = found
        return found

    def verified_before(self, token: str) -> bool:
        """Whether this process accepted the token's signature before (and still holds it)."""
        with self._lock:
            if self.settings.auth_service_url:
                return self._remote.get(self._remote_key(token)) is not None
            return token in self._claims

    def authenticate(self, token: str, address: str | None = None) -> AdminUser:
        """The admin a token names; `address` (the client's) puts the brute-force guard on it."""
        if address is None or self.guard is None:
            return self._authenticate(token)
        if not self.verified_before(token):
            self.guard.refuse_if_blocked(address)
        try:
            return self._authenticate(token)
        except ApiError as exc:
            if exc.status == 401:
                self.guard.failed(address)
            raise

    def _authenticate(self, token: str) -> AdminUser:
        token = check_token_shape(token)
        if self.settings.auth_service_url:
            return self._authenticate_remote(token)
        claims = self.decode(token)
        user_id = self.subject(claims)
        row = self._load_user(user_id)
        if row is None or not row["is_active"]:
            raise unauthorized("Invalid or expired token")
        if row["user_type"] not in ADMIN_TYPES:
            raise forbidden()
        return AdminUser(user_id, row["email"], row["username"], row["user_type"], float(claims["exp"]))

    def user_id_if_valid(self, token: str | None) -> str | None:
        """The verified subject of a token without touching the database or the auth service
        (rate-limit key). Through the auth service only a token it already vouched for counts."""
        if not token:
            return None
        if self.settings.auth_service_url:
            with self._lock:
                cached = self._remote.get(self._remote_key(token))
            return cached.id if cached else None
        try:
            return self.subject(self.decode(check_token_shape(token), remember=False))
        except ApiError:
            return None

    # -- remote auth service ---------------------------------------------------------
    def _remote_until(self, _key: str, admin: AdminUser, now: float) -> float:
        until = now + self._cache_ttl
        return min(until, admin.expires_at) if admin.expires_at is not None else until

    @staticmethod
    def _remote_key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def _authenticate_remote(self, token: str) -> AdminUser:
        key = self._remote_key(token)
        with self._lock:
            cached = self._remote.get(key)
        if cached is not None:
            return cached
        url = f"{self.settings.auth_service_url}/auth/verify-token"
        try:
            response = self._http.post(
                url,
                json={"token": token},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.settings.auth_service_timeout_s,
            )
        except requests.RequestException as exc:
            log.warning("auth service unreachable: %s", type(exc).__name__)
            raise ApiError(
                503, "The authentication service is unreachable; retry shortly", headers={"Retry-After": "5"}
            ) from None
        if response.status_code in (400, 401, 403, 404):
            raise unauthorized("Invalid or expired token")
        if response.status_code >= 300:
            raise ApiError(503, "The authentication service failed; retry shortly", headers={"Retry-After": "5"})
        try:
            body = response.json()
        except ValueError:
            raise ApiError(503, "The authentication service answered nonsense", headers={"Retry-After": "5"}) from None
        data = body.get("data", body) if isinstance(body, dict) else {}
        user = data.get("user", data) if isinstance(data, dict) else {}
        if not isinstance(user, dict) or not user.get("id") or body.get("success") is False:
            raise unauthorized("Invalid or expired token")
        if user.get("is_active") is False:
            raise unauthorized("Invalid or expired token")
        if user.get("user_type", user.get("role")) not in ADMIN_TYPES:
            raise forbidden()
        admin = AdminUser(
            str(user["id"]),
            user.get("email"),
            user.get("username"),
            str(user.get("user_type", user.get("role"))),
            unverified_exp(token),
        )
        with self._lock:
            self._remote[key] = admin
        return admin


def unverified_exp(token: str) -> float | None:
    """The exp claim of a token the auth service vouched for (its signature is not ours to check)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return float(exp) if exp is not None else None
    except (jwt.InvalidTokenError, TypeError, ValueError):
        return None


def request_token(allow_query: bool = False) -> str:
    """The bearer token of this request; browsers' EventSource may pass `access_token`."""
    header = request.headers.get("Authorization")
    if not header and allow_query and request.args.get("access_token"):
        return check_token_shape(request.args["access_token"])
    return parse_bearer(header)


def client_address(environ: dict[str, Any], trust_proxy: bool) -> str:
    """The client's address as the Flask side sees it (ProxyFix x_for=1: the proxy's entry)."""
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "") if trust_proxy else ""
    if forwarded:
        return forwarded.split(",")[-1].strip() or "unknown"
    return environ.get("REMOTE_ADDR") or "unknown"


def require_admin(allow_query_token: bool = False) -> AdminUser:
    """Authenticate this request as an admin and remember the user on `g`."""
    admin = services().authenticator.authenticate(request_token(allow_query_token), request.remote_addr or "unknown")
    g.admin = admin
    return admin


def sign_token(settings: Settings, user_id: str, *, ttl_seconds: int = 12 * 3600, extra: dict[str, Any] | None = None) -> str:
    """A development token for a user (HS* only: public-key deployments sign elsewhere)."""
    if not settings.jwt_secret:
        raise RuntimeError("signing needs JWT_SECRET")
    now = int(time.time())
    claims: dict[str, Any] = {"id": user_id, "sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    claims.update(extra or {})
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithms[0])
