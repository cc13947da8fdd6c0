"""Token verification and the admin guard, shared by REST, SSE and Socket.IO.

Tokens are verified locally with PyJWT against a fixed algorithm list (never the token's
own header), then the token's user must exist, be active and have a user_type of VIEW_ROLES or
ACTION_ROLES (roles.py says who may act). That lookup is
cached for AUTH_CACHE_SECONDS: a deactivated admin is refused within that time. With
AUTH_SERVICE_URL the auth service decides instead; which of the two verifies is chosen once,
when the Authenticator is built.

Refusals are AuthError with a transport-neutral kind: REST answers them in the error envelope
(registered with errors.py below), Socket.IO refuses the connection with a message per status.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import jwt
import requests
from cachetools import TLRUCache, TTLCache
from flask import g, request
from sqlalchemy import Engine, select

from admin_service.config import Settings
from admin_service.db.tables import users
from admin_service.errors import RETRY_AFTER_SECONDS, ApiError, register_translation
from admin_service.services import services
from admin_service.verified import VerifiedTokens

log = logging.getLogger("admin_service.auth")

MAX_TOKEN_LENGTH = 8192
JWT_LEEWAY_S = 5
# How long a verified token's claims are reused without checking its signature again.
CLAIMS_CACHE_SECONDS = 60
# 9999-12-31T23:59:59Z, the last second a datetime can hold: no NumericDate of ours is later.
MAX_NUMERIC_DATE = 253_402_300_799


@dataclass(frozen=True)
class AdminUser:
    id: str
    email: str | None
    username: str | None
    user_type: str
    expires_at: float | None  # the token's exp (epoch seconds); streams end there


class AuthFailure(Enum):
    """Why a token was not accepted, whatever the transport (REST, SSE, Socket.IO)."""

    MISSING = "missing"  # no credentials at all
    INVALID = "invalid"  # malformed, forged or expired token; unknown or inactive user
    FORBIDDEN = "forbidden"  # a valid user who is not an admin
    THROTTLED = "throttled"  # too many failed attempts from the client's address
    UNAVAILABLE = "unavailable"  # the auth service or the rate-limit store cannot answer


# The HTTP status of each failure: REST answers it, Socket.IO picks its refusal message by it.
HTTP_STATUS = {
    AuthFailure.MISSING: 401,
    AuthFailure.INVALID: 401,
    AuthFailure.FORBIDDEN: 403,
    AuthFailure.THROTTLED: 429,
    AuthFailure.UNAVAILABLE: 503,
}
REALM = 'Bearer realm="admin-service"'


class AuthError(Exception):
    """A token not accepted: the kind says why, retry_after (seconds) when trying again later may work."""

    def __init__(self, kind: AuthFailure, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        if retry_after is None and kind is AuthFailure.UNAVAILABLE:
            retry_after = RETRY_AFTER_SECONDS
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.kind]

    @property
    def rejects_credentials(self) -> bool:
        """The token itself was refused (what the brute-force guard counts)."""
        return self.kind in (AuthFailure.MISSING, AuthFailure.INVALID)


def auth_api_error(exc: AuthError) -> ApiError:
    """The REST answer: 401 with WWW-Authenticate, 403, 429 or 503 with Retry-After."""
    headers = {"WWW-Authenticate": REALM} if exc.status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return ApiError(exc.status, exc.message, headers=headers)


register_translation(AuthError, auth_api_error)


def unauthorized(message: str) -> AuthError:
    return AuthError(AuthFailure.INVALID, message)


def missing() -> AuthError:
    return AuthError(AuthFailure.MISSING, "Authentication required")


def invalid_token() -> AuthError:
    return AuthError(AuthFailure.INVALID, "Invalid or expired token")


def forbidden() -> AuthError:
    return AuthError(AuthFailure.FORBIDDEN, "Admin access required")


def parse_bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 saying what is wrong."""
    if not header:
        raise missing()
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise unauthorized("Authorization scheme must be Bearer")
    return check_token_shape(token.strip())


def check_token_shape(token: str) -> str:
    if not token:
        raise missing()
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2 or not token.isascii():
        raise invalid_token()
    return token


class Verifier(Protocol):
    """One way of turning a (well-shaped) token into an admin, chosen once per process."""

    def verify(self, token: str) -> AdminUser:
        """The admin the token names, or AuthError."""
        ...

    def user_id_if_valid(self, token: str) -> str | None:
        """The token's verified subject without the database or the auth service (rate-limit key)."""
        ...


class Guard(Protocol):
    """Brute-force throttling per client address (ratelimit.FailedAuthGuard)."""

    def refuse_if_blocked(self, address: str, exempt: Callable[[], bool]) -> None:
        """AuthError THROTTLED when the address is blocked, unless `exempt()` (asked only then)."""
        ...

    def failed(self, address: str) -> None: ...


class LocalVerifier:
    """Verifies signatures here (PyJWT, the configured algorithms only), then looks the user up."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._lock = threading.Lock()
        self._users: TTLCache[str, dict[str, Any] | None] = TTLCache(maxsize=10_000, ttl=max(settings.auth_cache_seconds, 0.001))
        # Verified claims by token: a dashboard sends the same token with every request, and the
        # rate limiter and the guard both need its subject. Keyed by the whole token (signature
        # included), so only a token that verified here before is ever a hit; exp is still
        # checked on every hit. (Which tokens verified before, for the guard: verified.py.)
        self._claims: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=4096, ttl=CLAIMS_CACHE_SECONDS)
        # None only in Settings(...) built by hand (load_settings requires a key): nothing verifies.
        self._key = settings.jwt_secret if settings.jwt_algorithms[0].startswith("HS") else settings.jwt_public_key
        self._options: jwt.types.Options = {"require": ["exp"], "verify_aud": settings.jwt_audience is not None}

    def decode(self, token: str, remember: bool = True) -> dict[str, Any]:
        """Verified claims of a token (signature, exp, iss, aud) or a 401. Only the guard's path
        caches a token's claims (the rate-limit key's only reads them)."""
        with self._lock:
            claims = self._claims.get(token)
        if claims is not None:
            if float(claims["exp"]) + JWT_LEEWAY_S <= time.time():
                raise invalid_token()
            return claims
        claims = self._verify(token)
        if remember:
            with self._lock:
                self._claims[token] = claims
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        if self._key is None:
            raise invalid_token()
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=list(self.settings.jwt_algorithms),
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                options=self._options,
                leeway=JWT_LEEWAY_S,
            )
        except (jwt.InvalidTokenError, ValueError, TypeError):  # ExpiredSignatureError included
            raise invalid_token() from None
        check_claims(claims, self.settings.jwt_max_lifetime_s, time.time())
        return claims

    @staticmethod
    def subject(claims: dict[str, Any]) -> str:
        raw = claims.get("id") or claims.get("sub")
        try:
            return str(uuid.UUID(str(raw)))
        except (ValueError, TypeError):
            raise invalid_token() from None

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

    def verify(self, token: str) -> AdminUser:
        claims = self.decode(token)
        user_id = self.subject(claims)
        row = self._load_user(user_id)
        if row is None or not row["is_active"]:
            raise invalid_token()
        if not self.settings.may_sign_in(row["user_type"]):
            raise forbidden()
        return AdminUser(user_id, row["email"], row["username"], row["user_type"], float(claims["exp"]))

    def user_id_if_valid(self, token: str) -> str | None:
        try:
            return self.subject(self.decode(check_token_shape(token), remember=False))
        except AuthError:
            return None


class AuthServiceVerifier:
    """Asks the auth service (POST AUTH_SERVICE_URL/auth/verify-token); its verdicts are cached."""

    def __init__(self, settings: Settings) -> None:
        assert settings.auth_service_url is not None
        self.settings = settings
        self.url = f"{settings.auth_service_url}/auth/verify-token"
        self.timeout_s = settings.auth_service_timeout_s
        self._cache_ttl = max(settings.auth_cache_seconds, 0.001)
        self._lock = threading.Lock()
        # The auth service's verdicts last AUTH_CACHE_SECONDS, never beyond the token's own exp.
        self._verdicts: TLRUCache[str, AdminUser] = TLRUCache(maxsize=10_000, ttu=self._verdict_until, timer=time.time)
        self._http = requests.Session()

    def _verdict_until(self, _key: str, admin: AdminUser, now: float) -> float:
        until = now + self._cache_ttl
        return min(until, admin.expires_at) if admin.expires_at is not None else until

    @staticmethod
    def _cache_key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def _cached(self, token: str) -> AdminUser | None:
        with self._lock:
            return self._verdicts.get(self._cache_key(token))

    def user_id_if_valid(self, token: str) -> str | None:
        # Only a token the auth service already vouched for counts.
        cached = self._cached(token)
        return cached.id if cached else None

    def verify(self, token: str) -> AdminUser:
        key = self._cache_key(token)
        with self._lock:
            cached = self._verdicts.get(key)
        if cached is not None:
            return cached
        try:
            response = self._http.post(
                self.url, json={"token": token}, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            log.warning("auth service unreachable: %s", type(exc).__name__)
            raise AuthError(AuthFailure.UNAVAILABLE, "The authentication service is unreachable; retry shortly") from None
        if response.status_code in (400, 401, 403, 404):
            raise invalid_token()
        if response.status_code >= 300:
            raise AuthError(AuthFailure.UNAVAILABLE, "The authentication service failed; retry shortly")
        try:
            body = response.json()
        except ValueError:
            raise AuthError(AuthFailure.UNAVAILABLE, "The authentication service answered nonsense") from None
        data = body.get("data", body) if isinstance(body, dict) else {}
        user = data.get("user", data) if isinstance(data, dict) else {}
        if not isinstance(user, dict) or not user.get("id") or body.get("success") is False:
            raise invalid_token()
        if user.get("is_active") is False:
            raise invalid_token()
        if not self.settings.may_sign_in(str(user.get("user_type", user.get("role")))):
            raise forbidden()
        admin = AdminUser(
            str(user["id"]),
            user.get("email"),
            user.get("username"),
            str(user.get("user_type", user.get("role"))),
            unverified_exp(token),
        )
        with self._lock:
            self._verdicts[key] = admin
        return admin


def numeric_date(value: Any) -> float | None:
    """A JWT NumericDate (RFC 7519: a JSON number of seconds since the epoch) as a float, or None
    when it is not one: a string or a bool (PyJWT reads both through int()), NaN, infinity, a
    negative number, or one beyond year 9999 (float(10**400) raises, and such an exp would
    outlive anything that compares or schedules with it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and not 0 <= value <= MAX_NUMERIC_DATE:  # before float(): no overflow
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_NUMERIC_DATE else None


def check_claims(claims: dict[str, Any], max_lifetime_s: float, now: float) -> None:
    """What PyJWT leaves unchecked, or checks leniently, in verified claims; a 401 otherwise.
    exp/iat/nbf must be NumericDates (exp is required), the token may not live longer than
    JWT_MAX_LIFETIME_S (exp - iat) nor be valid for longer from now (exp - now), and the
    subject claims must be strings (`sub` PyJWT checks itself)."""
    times = {}
    for name in ("exp", "iat", "nbf"):
        if name in claims:
            seconds = numeric_date(claims[name])
            if seconds is None:
                raise invalid_token()
            times[name] = seconds
    exp = times.get("exp")
    if exp is None or exp - now > max_lifetime_s + JWT_LEEWAY_S:
        raise invalid_token()
    if "iat" in times and exp - times["iat"] > max_lifetime_s:
        raise invalid_token()
    if not all(isinstance(claims.get(name), (str, type(None))) for name in ("id", "sub")):  # null: absent
        raise invalid_token()


def make_verifier(settings: Settings, engine: Engine) -> Verifier:
    """AUTH_SERVICE_URL set: the auth service decides; otherwise signatures are checked here."""
    if settings.auth_service_url:
        return AuthServiceVerifier(settings)
    return LocalVerifier(settings, engine)


class Authenticator:
    """Turns a bearer token into an AdminUser, or raises AuthError; the guard throttles guessing,
    never for a token that verified before (on any worker or instance, until its exp)."""

    def __init__(self, settings: Settings, engine: Engine, guard: Guard | None = None) -> None:
        self.settings = settings
        self.verifier = make_verifier(settings, engine)
        self.guard = guard
        self.verified = VerifiedTokens(engine, settings.admin_schema)

    def authenticate(self, token: str, address: str | None = None) -> AdminUser:
        """The admin a token names; `address` (the client's) puts the brute-force guard on it."""
        if address is None or self.guard is None:
            return self.verifier.verify(check_token_shape(token))
        # A token this process saw verify skips the guard's store call altogether (the usual
        # request); another is refused while its address is blocked, unless the shared record knows it.
        if not self.verified.known_here(token):
            self.guard.refuse_if_blocked(address, exempt=lambda: self.verified.seen(token))
        try:
            admin = self.verifier.verify(check_token_shape(token))
        except AuthError as exc:
            if exc.rejects_credentials:
                self.guard.failed(address)
            raise
        # Until its exp; a token the auth service vouched for without a readable exp, as long as
        # its verdict is reused.
        self.verified.remember(token, admin.expires_at or time.time() + self.settings.auth_cache_seconds)
        return admin

    def user_id_if_valid(self, token: str | None) -> str | None:
        """The verified subject of a token without touching the database or the auth service
        (rate-limit key). Through the auth service only a token it already vouched for counts."""
        if not token:
            return None
        return self.verifier.user_id_if_valid(token)


def unverified_exp(token: str) -> float | None:
    """The exp claim of a token the auth service vouched for (its signature is not ours to check)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except (jwt.InvalidTokenError, TypeError, ValueError):
        return None
    return numeric_date(claims.get("exp"))


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
