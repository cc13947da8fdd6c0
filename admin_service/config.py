"""Settings from the environment, validated once at start.

Every bad value stops the start with a message naming the variable, so a typo in a
deployment fails loudly instead of running with a surprising default.

Each setting is declared once, as a field of Settings: its environment variable, its default
and how it is read and checked (the bounds). load_settings reads the fields in order; the few
rules that tie several settings together (the JWT keys) are checked after.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from admin_service.live.notify import channels as notify_channels
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


T = TypeVar("T")
# How a setting is read: (environment, variable name, the field's default, the settings read
# before it) -> its value, or ConfigError naming the variable.
Reader = Callable[[Mapping[str, str], str, Any, Mapping[str, Any]], Any]
ENV = "env"  # the field metadata keys
READ = "read"


def setting(env: str, default: T, read: Reader) -> T:
    """A Settings field read from the environment variable `env`."""
    return field(default=default, metadata={ENV: env, READ: read})


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, lo: N, hi: N, parse: Callable[[str], N], kind: str) -> N:
    """A bounded number (`kind` names it in the message: "an integer", "a number")."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# --- readers (see Reader) ---------------------------------------------------------------


def integer(lo: int, hi: int) -> Reader:
    return lambda env, name, default, _: _number(env, name, default, lo, hi, int, "an integer")


def number(lo: float, hi: float) -> Reader:
    return lambda env, name, default, _: _number(env, name, default, lo, hi, float, "a number")


def boolean(env: Mapping[str, str], name: str, default: bool, _: Mapping[str, Any]) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def optional_text(env: Mapping[str, str], name: str, default: str | None, _: Mapping[str, Any]) -> str | None:
    return env.get(name) or default


def matching(pattern: str, message: str) -> Reader:
    """Text (the default when unset) that must match `pattern`; `message` is formatted with name and value."""
    compiled = re.compile(pattern)

    def read(env: Mapping[str, str], name: str, default: str, _: Mapping[str, Any]) -> str:
        value = env.get(name) or default
        if not compiled.match(value):
            raise ConfigError(message.format(name=name, value=value))
        return value

    return read


def _database_url(env: Mapping[str, str], name: str, default: str | None, _: Mapping[str, Any]) -> str | None:
    value = env.get(name) or default
    if value and not re.match(r"^postgres(ql)?(\+psycopg2)?://", value):
        raise ConfigError(f"{name} must be a postgresql:// URL")
    return value


def _public_key(env: Mapping[str, str], name: str, default: str | None, _: Mapping[str, Any]) -> str | None:
    """JWT_PUBLIC_KEY holds a PEM, or JWT_PUBLIC_KEY_FILE names a file with one."""
    key = env.get(name) or default
    path = env.get(f"{name}_FILE") or None
    if key and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            key = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE cannot be read: {exc}") from None
    if key and "BEGIN" not in key:
        raise ConfigError(f"{name} must be a PEM-encoded public key")
    return key


def _algorithms(env: Mapping[str, str], name: str, default: tuple[str, ...], read: Mapping[str, Any]) -> tuple[str, ...]:
    # With only a public key, the default is the public-key family.
    if not read["jwt_secret"] and read["jwt_public_key"]:
        default = ("RS256",)
    algorithms = _list(env, name, default)
    for alg in algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigError(f"{name}: unsupported algorithm {alg!r} (use {', '.join(SUPPORTED_ALGORITHMS)})")
    # One key type per deployment: mixing HS and RS/ES is exactly the key-confusion hole.
    if len({alg[:2] for alg in algorithms}) > 1:
        raise ConfigError(f"{name} must not mix HMAC (HS*) with public-key (RS*/ES*) algorithms")
    return algorithms


def _auth_service_url(env: Mapping[str, str], name: str, default: str | None, _: Mapping[str, Any]) -> str | None:
    url = env.get(name) or default
    if url and not re.match(r"^https?://", url):
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url.rstrip("/") if url else None


def _time_zone(env: Mapping[str, str], name: str, default: str, _: Mapping[str, Any]) -> str:
    tz_name = env.get(name) or default
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}: unknown time zone {tz_name!r}") from None
    return tz_name


def _rate(env: Mapping[str, str], name: str, default: str, _: Mapping[str, Any]) -> str:
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


def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    origins = _list(env, name, default)
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin like https://admin.example.com")
    return origins


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(env: Mapping[str, str], name: str, default: str, _: Mapping[str, Any]) -> str:
    level = (env.get(name) or default).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


def _path(env: Mapping[str, str], name: str, default: Path, _: Mapping[str, Any]) -> Path:
    return Path(env.get(name) or default).absolute()


def _severities(
    env: Mapping[str, str], name: str, default: tuple[tuple[str, str], ...], _: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    severities = dict(default)
    for item in _list(env, name, ()):
        rule, _sep, level = item.partition("=")
        if rule.strip() not in ALERT_RULES or level.strip() not in SEVERITIES:
            raise ConfigError(
                f"{name}: {item!r} must be rule=severity with rule in {', '.join(ALERT_RULES)} "
                f"and severity in {', '.join(SEVERITIES)}"
            )
        severities[rule.strip()] = level.strip()
    return tuple(severities.items())


USER_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")


def _user_types(env: Mapping[str, str], name: str, default: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    """A comma list of auth.users.user_type values (varchar(20)); empty means the default."""
    types = _list(env, name, default)
    for user_type in types:
        if not USER_TYPE.match(user_type):
            raise ConfigError(f"{name}: {user_type!r} is not a user_type (lower-case letters, digits, _ or -, at most 20)")
    return types


def _amqp_url(env: Mapping[str, str], name: str, default: str | None, _: Mapping[str, Any]) -> str | None:
    url = env.get(name) or default
    if url and not re.match(r"^amqps?://", url):
        raise ConfigError(f"{name} must be an amqp:// or amqps:// URL")
    return url


def _action_transport(env: Mapping[str, str], name: str, default: str | None, read: Mapping[str, Any]) -> str | None:
    """amqp, http or demo: as set, or chosen by which of ACTION_AMQP_URL / JOB_ACTIONS_URL is
    set; None when neither is (the action routes answer 503 saying how to configure one)."""
    value = (env.get(name) or "").strip().lower() or None
    if value not in (None, "auto", "amqp", "http", "demo"):
        raise ConfigError(f"{name} must be auto, amqp, http or demo, got {value!r}")
    amqp, http = read["action_amqp_url"], read["job_actions_url"]
    if value in (None, "auto"):
        if amqp and http:
            raise ConfigError(f"both ACTION_AMQP_URL and JOB_ACTIONS_URL are set: choose one with {name}=amqp or http")
        return "amqp" if amqp else "http" if http else None
    if value == "amqp" and not amqp:
        raise ConfigError(f"{name}=amqp needs ACTION_AMQP_URL")
    if value == "http" and not http:
        raise ConfigError(f"{name}=http needs JOB_ACTIONS_URL")
    if value == "http" and not read["job_actions_service_key"]:
        raise ConfigError(f"{name}=http needs JOB_ACTIONS_SERVICE_KEY (the owner service's key for this service)")
    if value == "demo" and not read["embedded_demo"]:
        # The demo executor writes the archive tables: never against a real platform's database.
        raise ConfigError(f"{name}=demo is only for `make run`'s embedded database (it plays the platform there)")
    return value


def _notify(
    env: Mapping[str, str], name: str, default: notify_channels.NotifyConfig, _: Mapping[str, Any]
) -> notify_channels.NotifyConfig:
    """The notification channels: the JSON in NOTIFY_CHANNELS, or the file NOTIFY_CHANNELS_FILE names."""
    try:
        found = notify_channels.load(env, name, f"{name}_FILE")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return found if found.channels else default


def _base_url(env: Mapping[str, str], name: str, default: str, _: Mapping[str, Any]) -> str:
    value = (env.get(name) or default).rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


STORAGE_URI = r"^(database|memory|redis|rediss|redis\+sentinel|redis\+cluster|memcached)://"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = setting("DATABASE_URL", None, _database_url)
    port: int = setting("PORT", 3007, integer(1, 65535))
    jwt_secret: str | None = setting("JWT_SECRET", None, optional_text)
    jwt_public_key: str | None = setting("JWT_PUBLIC_KEY", None, _public_key)
    jwt_algorithms: tuple[str, ...] = setting("JWT_ALGORITHMS", ("HS256",), _algorithms)
    jwt_issuer: str | None = setting("JWT_ISSUER", None, optional_text)
    jwt_audience: str | None = setting("JWT_AUDIENCE", None, optional_text)
    # Longest lifetime a locally verified token may claim (exp - iat, and exp - now); see the README.
    jwt_max_lifetime_s: int = setting("JWT_MAX_LIFETIME_S", 7 * 86400, integer(60, 366 * 86400))
    auth_service_url: str | None = setting("AUTH_SERVICE_URL", None, _auth_service_url)
    auth_service_timeout_s: float = setting("AUTH_SERVICE_TIMEOUT_S", 3.0, number(0.1, 60))
    auth_cache_seconds: float = setting("AUTH_CACHE_SECONDS", 5.0, number(0, 300))
    # Roles (admin_service/roles.py): who may look, and who may also act on jobs. Acting is
    # superadmin only by default: this service never let anyone act before, and an upgrade
    # should not hand every admin a new power; a deployment opts admins in with ACTION_ROLES.
    view_roles: tuple[str, ...] = setting("VIEW_ROLES", ("admin", "superadmin"), _user_types)
    action_roles: tuple[str, ...] = setting("ACTION_ROLES", ("superadmin",), _user_types)
    job_stats_interval_ms: int = setting("JOB_STATS_INTERVAL_MS", 5000, integer(250, 3_600_000))
    # How long a worker waits for the capture leader's published stats before computing them itself.
    stats_leader_wait_ms: int = setting("STATS_LEADER_WAIT_MS", 2000, integer(0, 600_000))
    # How often the capture leader replaces the maintained counts per status by a full count.
    stats_reconcile_s: float = setting("STATS_RECONCILE_S", 600.0, number(1, 86_400))
    # Serve the maintained counts while capture polls, too (it samples: changes it cannot see,
    # such as an insert of a finished job or a delete, are counted only at the next reconciliation).
    # Off: exact capture's counts are served, polling's counted by the stats leader each interval.
    stats_poll_counts: bool = setting("STATS_POLL_COUNTS", False, boolean)
    # How long the exact total of a filtered list (count=exact on a big table) is shared by the
    # whole deployment before one request recounts it (jobs/queries.py ListCounts).
    list_count_interval_ms: int = setting("LIST_COUNT_INTERVAL_MS", 10000, integer(250, 3_600_000))
    allowed_origins: tuple[str, ...] = setting("ALLOWED_ORIGINS", ("http://localhost:3000",), _origins)
    db_pool_max: int = setting("DB_POOL_MAX", 20, integer(1, 500))
    db_statement_timeout_ms: int = setting("DB_STATEMENT_TIMEOUT_MS", 5000, integer(100, 600_000))
    db_connect_timeout_s: int = setting("DB_CONNECT_TIMEOUT_S", 3, integer(1, 60))
    rate_limit: str = setting("RATE_LIMIT", "600 per minute", _rate)
    # Exports (GET /admin/jobs/export) have a budget of their own: one export reads up to
    # EXPORT_MAX_ROWS rows, it is not one request of RATE_LIMIT.
    export_rate_limit: str = setting("EXPORT_RATE_LIMIT", "10 per minute", _rate)
    export_max_rows: int = setting("EXPORT_MAX_ROWS", 1_000_000, integer(1, 100_000_000))
    # Rows per keyset batch: one short query each, and a yield to the worker's other requests.
    export_batch_rows: int = setting("EXPORT_BATCH_ROWS", 5000, integer(1, 100_000))
    # Failed token checks per client address before its new tokens are refused (429).
    auth_failure_limit: str = setting("AUTH_FAILURE_LIMIT", "20 per minute", _rate)
    rate_limit_storage_uri: str = setting(
        "RATE_LIMIT_STORAGE_URI",
        # The service's own PostgreSQL (limits_store.py): shared by every worker and instance.
        "database://",
        matching(STORAGE_URI, "{name} must be database://, memory:// or a redis:// URI, got {value!r}"),
    )
    rate_limit_fail_open: bool = setting("RATE_LIMIT_FAIL_OPEN", True, boolean)
    # database://: hits a process may take in one call for a busy key and grant itself
    # (limits_store.py, "Local reservations"); 1: one call per request.
    rate_limit_local_batch: int = setting("RATE_LIMIT_LOCAL_BATCH", 32, integer(1, 1000))
    stats_timezone: str = setting("STATS_TIMEZONE", "UTC", _time_zone)
    performance_window_hours: int = setting("PERFORMANCE_WINDOW_HOURS", 24, integer(1, 24 * 90))
    # Failures and trends of one range are shared this long: a 90-day grouping costs seconds of
    # database time at 1,000,000 jobs, and a month's chart does not change much in a minute.
    triage_share_ms: int = setting("TRIAGE_SHARE_MS", 60_000, integer(250, 3_600_000))
    # Closed days rolled up (jobs/days.py: the stats' daily counts, failure triage's groups):
    # how many (0: none, every day read from the jobs table), and how often each is rebuilt
    # whatever capture saw (polling misses edits of closed jobs and deletes).
    closed_days: int = setting("CLOSED_DAYS", 92, integer(0, 400))
    closed_days_reconcile_s: float = setting("CLOSED_DAYS_RECONCILE_S", 3600.0, number(10, 7 * 86_400))
    admin_schema: str = setting(
        "ADMIN_SCHEMA", "admin", matching(IDENTIFIER.pattern, "{name} must be a lower-case SQL identifier, got {value!r}")
    )
    trust_proxy: bool = setting("TRUST_PROXY", False, boolean)
    log_level: str = setting("LOG_LEVEL", "INFO", _log_level)
    embedded_pg_dir: Path = setting("EMBEDDED_PG_DIR", Path(".data/pgdata"), _path)
    debug: bool = setting("DEBUG", False, boolean)
    # live events
    capture_poll_ms: int = setting("CAPTURE_POLL_MS", 500, integer(50, 60_000))
    capture_overlap_s: float = setting("CAPTURE_OVERLAP_S", 10.0, number(0, 3600))
    # auto: exact when the change-capture trigger is installed, else polling (live/changes.py).
    capture_mode: str = setting(
        "CAPTURE_MODE", "auto", matching(r"^(auto|exact|poll)\Z", "{name} must be auto, exact or poll, not {value!r}")
    )
    # How often the leader looks for an installed or dropped change-capture trigger besides the
    # install's own NOTIFY (which it follows at once): for DDL run by hand without it.
    capture_mode_check_s: float = setting("CAPTURE_MODE_CHECK_S", 5.0, number(0.1, 3600))
    tail_poll_ms: int = setting("TAIL_POLL_MS", 1000, integer(50, 60_000))
    sse_heartbeat_s: float = setting("SSE_HEARTBEAT_S", 5.0, number(0.1, 300))
    # Open streams per user across every worker and instance (live/caps.py); beyond it 429.
    sse_max_streams_per_user: int = setting("SSE_MAX_STREAMS_PER_USER", 20, integer(1, 100_000))
    sse_retry_ms: int = setting("SSE_RETRY_MS", 3000, integer(100, 600_000))
    subscriber_queue_max: int = setting("SUBSCRIBER_QUEUE_MAX", 1000, integer(1, 1_000_000))
    event_retention_days: float = setting("EVENT_RETENTION_DAYS", 7.0, number(0.001, 3650))
    # alerts
    alert_interval_s: float = setting("ALERT_INTERVAL_S", 10.0, number(0.1, 3600))
    alert_failure_rate: float = setting("ALERT_FAILURE_RATE", 0.25, number(0, 1))
    alert_failure_window_min: int = setting("ALERT_FAILURE_WINDOW_MIN", 15, integer(1, 24 * 60))
    alert_failure_min_jobs: int = setting("ALERT_FAILURE_MIN_JOBS", 20, integer(1, 1_000_000))
    alert_queue_max: int = setting("ALERT_QUEUE_MAX", 1000, integer(1, 100_000_000))
    alert_queue_max_age_s: int = setting("ALERT_QUEUE_MAX_AGE_S", 900, integer(1, 30 * 86400))
    alert_processing_timeout_s: int = setting("ALERT_PROCESSING_TIMEOUT_S", 1800, integer(1, 30 * 86400))
    alert_severities: tuple[tuple[str, str], ...] = setting("ALERT_SEVERITIES", DEFAULT_SEVERITIES, _severities)
    # notifications (admin_service/live/notify/): channels, delivery, storm control
    notify: notify_channels.NotifyConfig = setting("NOTIFY_CHANNELS", notify_channels.NO_CHANNELS, _notify)
    dashboard_url: str = setting("DASHBOARD_URL", "http://localhost:3007", _base_url)  # messages link here
    notify_max_attempts: int = setting("NOTIFY_MAX_ATTEMPTS", 10, integer(1, 100))
    notify_backoff_s: float = setting("NOTIFY_BACKOFF_S", 2.0, number(0.01, 3600))  # the first retry's delay
    notify_backoff_max_s: float = setting("NOTIFY_BACKOFF_MAX_S", 600.0, number(0.01, 86400))
    notify_poll_s: float = setting("NOTIFY_POLL_S", 1.0, number(0.05, 60))
    # A rule that fires again within this long of its last episode's end is flapping: its new
    # episode is told only if it still holds when the gap has passed.
    alert_min_episode_gap_s: float = setting("ALERT_MIN_EPISODE_GAP_S", 300.0, number(0, 86400))
    # At most one new-alert message per channel per alert type in this window; the rest in a digest.
    notify_window_s: float = setting("NOTIFY_WINDOW_S", 300.0, number(0, 86400))
    # Socket.IO (the per-user cap counts across every worker and instance: live/caps.py)
    socketio_max_connections_per_user: int = setting("SOCKETIO_MAX_CONNECTIONS_PER_USER", 20, integer(1, 100_000))
    socketio_events_per_second: float = setting("SOCKETIO_EVENTS_PER_SECOND", 10.0, number(0.1, 10_000))
    # Engine.IO sessions before their Socket.IO CONNECT (live/socketio/handshakes.py), per worker
    socketio_connect_timeout_s: float = setting("SOCKETIO_CONNECT_TIMEOUT_S", 5.0, number(0.5, 120))
    socketio_max_pending: int = setting("SOCKETIO_MAX_PENDING", 1000, integer(1, 1_000_000))
    socketio_handshakes_per_minute: int = setting("SOCKETIO_HANDSHAKES_PER_MINUTE", 300, integer(1, 1_000_000))
    # /metrics (admin_service/metrics.py): without a token, loopback only
    metrics_enabled: bool = setting("METRICS_ENABLED", True, boolean)
    metrics_token: str | None = setting("METRICS_TOKEN", None, optional_text)
    # Job actions (admin_service/actions/).
    action_amqp_url: str | None = setting("ACTION_AMQP_URL", None, _amqp_url)
    action_amqp_exchange: str = setting(
        "ACTION_AMQP_EXCHANGE", "atma_exchange", matching(r"^[\w.:-]{1,255}$", "{name}: {value!r} is not an exchange name")
    )
    action_amqp_routing_key: str = setting(
        "ACTION_AMQP_ROUTING_KEY", "analysis.retry", matching(r"^[\w.#*:-]{1,255}$", "{name}: {value!r} is not a routing key")
    )
    job_actions_url: str | None = setting("JOB_ACTIONS_URL", None, _auth_service_url)
    job_actions_service_key: str | None = setting("JOB_ACTIONS_SERVICE_KEY", None, optional_text)
    # Set by `serve` for its embedded database only: the demo executor may play the platform there.
    embedded_demo: bool = setting("ADMIN_SERVICE_EMBEDDED_DEMO", False, boolean)
    action_transport: str | None = setting("ACTION_TRANSPORT", None, _action_transport)
    action_send_timeout_s: float = setting("ACTION_SEND_TIMEOUT_S", 5.0, number(0.1, 120))
    action_rate_per_s: float = setting("ACTION_RATE_PER_S", 50.0, number(0.1, 10_000))
    action_max_jobs: int = setting("ACTION_MAX_JOBS", 1000, integer(1, 10_000))
    action_confirm_ttl_s: int = setting("ACTION_CONFIRM_TTL_S", 300, integer(10, 3600))
    action_pickup_timeout_s: float = setting("ACTION_PICKUP_TIMEOUT_S", 300.0, number(1, 7 * 86400))
    action_backoff_max_s: float = setting("ACTION_BACKOFF_MAX_S", 30.0, number(0.1, 3600))

    def may_sign_in(self, user_type: str) -> bool:
        """Whether a user of this type is let in at all: who may act may also look."""
        return user_type in self.view_roles or user_type in self.action_roles

    def may_act(self, user_type: str) -> bool:
        return user_type in self.action_roles

    def severity(self, rule: str) -> str:
        return dict(self.alert_severities).get(rule, "medium")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.stats_timezone)


def _check_keys(values: Mapping[str, Any]) -> None:
    """The rules between the JWT settings (each was checked on its own when read)."""
    secret, public_key, auth_url = values["jwt_secret"], values["jwt_public_key"], values["auth_service_url"]
    families = {alg[:2] for alg in values["jwt_algorithms"]}
    if "HS" in families and secret is not None and len(secret) < 32:
        # RFC 7518: an HS256 key shorter than the hash output is brute-forceable.
        raise ConfigError("JWT_SECRET must be at least 32 characters")
    if "HS" not in families and not public_key:
        raise ConfigError("JWT_ALGORITHMS names public-key algorithms but JWT_PUBLIC_KEY is not set")
    if "HS" in families and not secret and not auth_url:
        raise ConfigError("JWT_SECRET is required (or JWT_PUBLIC_KEY, or AUTH_SERVICE_URL to verify through the auth service)")


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        values[spec.name] = spec.metadata[READ](env, spec.metadata[ENV], spec.default, values)
    _check_keys(values)
    known = {f.name for f in fields(Settings)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key}")
        values[key] = value
    return Settings(**values)
