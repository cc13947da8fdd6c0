"""Settings from the environment, validated once at start.

Every bad value stops the start with a message naming the variable, so a typo in a
deployment fails loudly instead of running with a surprising default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from admin_service.names import ALERT_RULES, HIGH_FAILURE_RATE, PROCESSING_TIMEOUT, QUEUE_OVERFLOW, RETRIES_EXHAUSTED

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SUPPORTED_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


SEVERITIES = ("low", "medium", "high", "critical")
DEFAULT_SEVERITIES = (
    (HIGH_FAILURE_RATE, "high"),
    (QUEUE_OVERFLOW, "medium"),
    (PROCESSING_TIMEOUT, "high"),
    (RETRIES_EXHAUSTED, "medium"),
)


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    port: int = 3007
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    auth_service_url: str | None = None
    auth_service_timeout_s: float = 3.0
    auth_cache_seconds: float = 5.0
    job_stats_interval_ms: int = 5000
    allowed_origins: tuple[str, ...] = ("http://localhost:3000",)
    db_pool_max: int = 20
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_s: int = 3
    rate_limit: str = "600 per minute"
    # Failed token checks per client address before its new tokens are refused (429).
    auth_failure_limit: str = "20 per minute"
    rate_limit_storage_uri: str = "memory://"
    rate_limit_fail_open: bool = True
    stats_timezone: str = "UTC"
    performance_window_hours: int = 24
    admin_schema: str = "admin"
    trust_proxy: bool = False
    log_level: str = "INFO"
    embedded_pg_dir: Path = field(default_factory=lambda: Path(".data/pgdata"))
    debug: bool = False
    # live events
    capture_poll_ms: int = 500
    capture_overlap_s: float = 10.0
    tail_poll_ms: int = 1000
    sse_heartbeat_s: float = 5.0
    sse_retry_ms: int = 3000
    subscriber_queue_max: int = 1000
    event_retention_days: float = 7.0
    # alerts
    alert_interval_s: float = 10.0
    alert_failure_rate: float = 0.25
    alert_failure_window_min: int = 15
    alert_failure_min_jobs: int = 20
    alert_queue_max: int = 1000
    alert_queue_max_age_s: int = 900
    alert_processing_timeout_s: int = 1800
    alert_severities: tuple[tuple[str, str], ...] = DEFAULT_SEVERITIES
    # Socket.IO
    socketio_max_connections_per_user: int = 20
    socketio_events_per_second: float = 10.0
    # /metrics (admin_service/metrics.py): without a token, loopback only
    metrics_enabled: bool = True
    metrics_token: str | None = None

    def severity(self, rule: str) -> str:
        return dict(self.alert_severities).get(rule, "medium")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.stats_timezone)


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _public_key(env: Mapping[str, str]) -> str | None:
    """JWT_PUBLIC_KEY holds a PEM, or JWT_PUBLIC_KEY_FILE names a file with one."""
    key = env.get("JWT_PUBLIC_KEY") or None
    path = env.get("JWT_PUBLIC_KEY_FILE") or None
    if key and path:
        raise ConfigError("set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both")
    if path:
        try:
            key = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"JWT_PUBLIC_KEY_FILE cannot be read: {exc}") from None
    if key and "BEGIN" not in key:
        raise ConfigError("JWT_PUBLIC_KEY must be a PEM-encoded public key")
    return key


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A limits rate string ("600 per minute"; several separated by ';')."""
    value = env.get(name) or default
    try:
        from limits import parse_many

        items = parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must look like {default!r}, got {value!r}") from None
    # limits accepts "0 per minute", which would refuse everything.
    if any(item.amount < 1 for item in items):
        raise ConfigError(f"{name} must allow at least 1 per period, got {value!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    public_key = _public_key(env)
    secret = env.get("JWT_SECRET") or None
    default_algs = ("HS256",) if secret or not public_key else ("RS256",)
    algorithms = _list(env, "JWT_ALGORITHMS", default_algs)
    for alg in algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigError(f"JWT_ALGORITHMS: unsupported algorithm {alg!r} (use {', '.join(SUPPORTED_ALGORITHMS)})")
    # One key type per deployment: mixing HS and RS/ES is exactly the key-confusion hole.
    families = {alg[:2] for alg in algorithms}
    if len(families) > 1:
        raise ConfigError("JWT_ALGORITHMS must not mix HMAC (HS*) with public-key (RS*/ES*) algorithms")
    if "HS" in families and secret is not None and len(secret) < 32:
        # RFC 7518: an HS256 key shorter than the hash output is brute-forceable.
        raise ConfigError("JWT_SECRET must be at least 32 characters")
    if "HS" not in families and not public_key:
        raise ConfigError("JWT_ALGORITHMS names public-key algorithms but JWT_PUBLIC_KEY is not set")

    auth_url = env.get("AUTH_SERVICE_URL") or None
    if "HS" in families and not secret and not auth_url:
        raise ConfigError("JWT_SECRET is required (or JWT_PUBLIC_KEY, or AUTH_SERVICE_URL to verify through the auth service)")
    if auth_url and not re.match(r"^https?://", auth_url):
        raise ConfigError(f"AUTH_SERVICE_URL must be an http(s) URL, got {auth_url!r}")

    database_url = env.get("DATABASE_URL") or None
    if database_url and not re.match(r"^postgres(ql)?(\+psycopg2)?://", database_url):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL")

    tz_name = env.get("STATS_TIMEZONE") or "UTC"
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"STATS_TIMEZONE: unknown time zone {tz_name!r}") from None

    schema = env.get("ADMIN_SCHEMA") or "admin"
    if not IDENTIFIER.match(schema):
        raise ConfigError(f"ADMIN_SCHEMA must be a lower-case SQL identifier, got {schema!r}")

    rate_limit = _rate(env, "RATE_LIMIT", Settings.rate_limit)
    auth_failure_limit = _rate(env, "AUTH_FAILURE_LIMIT", Settings.auth_failure_limit)
    storage = env.get("RATE_LIMIT_STORAGE_URI") or "memory://"
    if not re.match(r"^(memory|redis|rediss|redis\+sentinel|redis\+cluster|memcached)://", storage):
        raise ConfigError(f"RATE_LIMIT_STORAGE_URI must be memory:// or a redis:// URI, got {storage!r}")

    log_level = (env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    origins = _list(env, "ALLOWED_ORIGINS", Settings.allowed_origins)
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"ALLOWED_ORIGINS: {origin!r} is not an origin like https://admin.example.com")

    severities = dict(DEFAULT_SEVERITIES)
    for item in _list(env, "ALERT_SEVERITIES", ()):
        rule, _, level = item.partition("=")
        if rule.strip() not in ALERT_RULES or level.strip() not in SEVERITIES:
            raise ConfigError(
                f"ALERT_SEVERITIES: {item!r} must be rule=severity with rule in {', '.join(ALERT_RULES)} "
                f"and severity in {', '.join(SEVERITIES)}"
            )
        severities[rule.strip()] = level.strip()

    values: dict[str, object] = dict(
        database_url=database_url,
        port=_int(env, "PORT", 3007, 1, 65535),
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_algorithms=algorithms,
        jwt_issuer=env.get("JWT_ISSUER") or None,
        jwt_audience=env.get("JWT_AUDIENCE") or None,
        auth_service_url=auth_url.rstrip("/") if auth_url else None,
        auth_service_timeout_s=_float(env, "AUTH_SERVICE_TIMEOUT_S", 3.0, 0.1, 60),
        auth_cache_seconds=_float(env, "AUTH_CACHE_SECONDS", 5.0, 0, 300),
        job_stats_interval_ms=_int(env, "JOB_STATS_INTERVAL_MS", 5000, 250, 3_600_000),
        allowed_origins=origins,
        db_pool_max=_int(env, "DB_POOL_MAX", 20, 1, 500),
        db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
        db_connect_timeout_s=_int(env, "DB_CONNECT_TIMEOUT_S", 3, 1, 60),
        rate_limit=rate_limit,
        auth_failure_limit=auth_failure_limit,
        rate_limit_storage_uri=storage,
        rate_limit_fail_open=_bool(env, "RATE_LIMIT_FAIL_OPEN", True),
        stats_timezone=tz_name,
        performance_window_hours=_int(env, "PERFORMANCE_WINDOW_HOURS", 24, 1, 24 * 90),
        admin_schema=schema,
        trust_proxy=_bool(env, "TRUST_PROXY", False),
        log_level=log_level,
        embedded_pg_dir=Path(env.get("EMBEDDED_PG_DIR") or ".data/pgdata").absolute(),
        debug=_bool(env, "DEBUG", False),
        capture_poll_ms=_int(env, "CAPTURE_POLL_MS", 500, 50, 60_000),
        capture_overlap_s=_float(env, "CAPTURE_OVERLAP_S", 10.0, 0, 3600),
        tail_poll_ms=_int(env, "TAIL_POLL_MS", 1000, 50, 60_000),
        sse_heartbeat_s=_float(env, "SSE_HEARTBEAT_S", 5.0, 0.1, 300),
        sse_retry_ms=_int(env, "SSE_RETRY_MS", 3000, 100, 600_000),
        subscriber_queue_max=_int(env, "SUBSCRIBER_QUEUE_MAX", 1000, 1, 1_000_000),
        event_retention_days=_float(env, "EVENT_RETENTION_DAYS", 7.0, 0.001, 3650),
        alert_interval_s=_float(env, "ALERT_INTERVAL_S", 10.0, 0.1, 3600),
        alert_failure_rate=_float(env, "ALERT_FAILURE_RATE", 0.25, 0, 1),
        alert_failure_window_min=_int(env, "ALERT_FAILURE_WINDOW_MIN", 15, 1, 24 * 60),
        alert_failure_min_jobs=_int(env, "ALERT_FAILURE_MIN_JOBS", 20, 1, 1_000_000),
        alert_queue_max=_int(env, "ALERT_QUEUE_MAX", 1000, 1, 100_000_000),
        alert_queue_max_age_s=_int(env, "ALERT_QUEUE_MAX_AGE_S", 900, 1, 30 * 86400),
        alert_processing_timeout_s=_int(env, "ALERT_PROCESSING_TIMEOUT_S", 1800, 1, 30 * 86400),
        alert_severities=tuple(severities.items()),
        socketio_max_connections_per_user=_int(env, "SOCKETIO_MAX_CONNECTIONS_PER_USER", 20, 1, 100_000),
        socketio_events_per_second=_float(env, "SOCKETIO_EVENTS_PER_SECOND", 10.0, 0.1, 10_000),
        metrics_enabled=_bool(env, "METRICS_ENABLED", True),
        metrics_token=env.get("METRICS_TOKEN") or None,
    )
    known = {f.name for f in fields(Settings)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key}")
        values[key] = value
    return Settings(**values)  # type: ignore[arg-type]
