"""Notification channels as configured: NOTIFY_CHANNELS (JSON) or NOTIFY_CHANNELS_FILE (a JSON file).

    {"channels": [
       {"name": "ops", "type": "webhook", "url": "https://ops.example/hooks/alerts", "secret_env": "OPS_HOOK_SECRET",
        "min_severity": "medium", "alert_types": ["high_failure_rate", "queue_overflow"]},
       {"name": "chat", "type": "slack", "url": "https://hooks.slack.com/services/..."},
       {"name": "mail", "type": "email", "host": "smtp.example", "port": 587, "security": "starttls",
        "username": "alerts", "password_env": "SMTP_PASSWORD", "from": "alerts@example", "to": ["oncall@example"]},
       {"name": "pager", "type": "webhook", "url": "...", "secret_env": "PAGER_SECRET", "escalation_only": true}],
     "escalation": {"channel": "pager", "after_min": 15, "repeat_min": 60, "max": 3}}

Secrets may be given inline (`secret`, `password`) or, better, named by the environment
variable that holds them (`secret_env`, `password_env`). Parsed once at start: a bad file is a
ConfigError naming the channel and the key (config.py wraps the ValueError raised here).
A leaf below config (it imports only names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from admin_service.names import ALERT_RULES

SEVERITIES = ("low", "medium", "high", "critical")
CHANNEL_TYPES = ("webhook", "slack", "email")
SECURITIES = ("starttls", "tls", "none")
NAME_MAX = 100  # alert_deliveries.channel


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 1


@dataclass(frozen=True)
class Channel:
    name: str
    type: str  # webhook | slack | email
    min_severity: str = "low"
    alert_types: frozenset[str] = frozenset()  # empty: every type
    escalation_only: bool = False  # receives escalations only
    timeout_s: float = 10.0
    # webhook, slack
    url: str | None = None
    secret: str | None = None  # webhook: the shared HMAC key
    # email
    host: str | None = None
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()

    def wants(self, alert_type: str, severity: str) -> bool:
        """Whether a new alert (or its resolution) of this type and severity goes to this channel."""
        return not self.escalation_only and self.accepts(alert_type, severity)

    def accepts(self, alert_type: str, severity: str) -> bool:
        """Whether this type and severity pass the channel's filters (escalations use only these)."""
        if self.alert_types and alert_type not in self.alert_types:
            return False
        return severity_rank(severity) >= severity_rank(self.min_severity)

    def describe(self) -> str:
        where = self.url if self.type != "email" else f"smtp {self.host}:{self.port} to {', '.join(self.recipients)}"
        return f"{self.name} ({self.type}, {where})"


@dataclass(frozen=True)
class Escalation:
    channel: str
    after_s: float  # an alert still unacknowledged this long after it was raised escalates
    repeat_s: float  # then again every repeat_s
    max_times: int  # at most this many escalation messages per episode


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[Channel, ...] = ()
    escalation: Escalation | None = None
    source: str = field(default="", compare=False)  # where it came from, for messages

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def matching(self, alert_type: str, severity: str) -> list[Channel]:
        return [c for c in self.channels if c.wants(alert_type, severity)]


NO_CHANNELS = NotifyConfig()


def _text(item: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = item.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: {key!r} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value


def _secret(item: Mapping[str, Any], key: str, where: str, env: Mapping[str, str]) -> str | None:
    inline = _text(item, key, where)
    named = _text(item, f"{key}_env", where)
    if inline is not None and named is not None:
        raise ValueError(f"{where}: give {key!r} or {key + '_env'!r}, not both")
    if named is not None:
        value = env.get(named)
        if not value:
            raise ValueError(f"{where}: {key + '_env'!r} names {named}, which is not set")
        return value
    return inline


def _number(item: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float) -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{where}: {key!r} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _url(item: Mapping[str, Any], where: str) -> str:
    url = _text(item, "url", where, required=True)
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: 'url' must be an http:// or https:// URL")
    return url


KNOWN_KEYS = {
    "name", "type", "min_severity", "alert_types", "escalation_only", "timeout_s", "url", "secret", "secret_env",
    "host", "port", "security", "username", "password", "password_env", "from", "to",
}  # fmt: skip


def _channel(item: Any, index: int, env: Mapping[str, str]) -> Channel:
    where = f"channels[{index}]"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object")
    name = _text(item, "name", where, required=True)
    assert name is not None
    if len(name) > NAME_MAX:
        raise ValueError(f"{where}: 'name' must be at most {NAME_MAX} characters")
    where = f"channel {name!r}"
    unknown = sorted(set(item) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = item.get("type")
    if kind not in CHANNEL_TYPES:
        raise ValueError(f"{where}: 'type' must be one of {', '.join(CHANNEL_TYPES)}, got {kind!r}")
    min_severity = item.get("min_severity", "low")
    if min_severity not in SEVERITIES:
        raise ValueError(f"{where}: 'min_severity' must be one of {', '.join(SEVERITIES)}, got {min_severity!r}")
    types = item.get("alert_types", [])
    if not isinstance(types, list) or any(t not in ALERT_RULES for t in types):
        raise ValueError(f"{where}: 'alert_types' must be a list of {', '.join(ALERT_RULES)}, got {types!r}")
    escalation_only = item.get("escalation_only", False)
    if not isinstance(escalation_only, bool):
        raise ValueError(f"{where}: 'escalation_only' must be true or false")
    common: dict[str, Any] = {
        "name": name,
        "type": kind,
        "min_severity": min_severity,
        "alert_types": frozenset(types),
        "escalation_only": escalation_only,
        "timeout_s": _number(item, "timeout_s", where, 10.0, 0.1, 120),
    }
    if kind == "webhook":
        secret = _secret(item, "secret", where, env)
        if not secret or len(secret) < 16:
            raise ValueError(f"{where}: a webhook needs a 'secret' (or 'secret_env') of at least 16 characters")
        return Channel(**common, url=_url(item, where), secret=secret)
    if kind == "slack":
        return Channel(**common, url=_url(item, where))
    security = item.get("security", "starttls")
    if security not in SECURITIES:
        raise ValueError(f"{where}: 'security' must be one of {', '.join(SECURITIES)}, got {security!r}")
    recipients = item.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
        raise ValueError(f"{where}: 'to' must be an address or a list of addresses")
    username, password = _text(item, "username", where), _secret(item, "password", where, env)
    if (username is None) != (password is None):
        raise ValueError(f"{where}: 'username' and 'password' go together")
    sender = _text(item, "from", where, required=True)
    default_port = 465 if security == "tls" else 587 if security == "starttls" else 25
    return Channel(
        **common,
        host=_text(item, "host", where, required=True),
        port=int(_number(item, "port", where, default_port, 1, 65535)),
        security=security,
        username=username,
        password=password,
        sender=sender,
        recipients=tuple(recipients),
    )


def parse(text: str, env: Mapping[str, str], source: str) -> NotifyConfig:
    """The channels and escalation policy of a JSON document; ValueError naming what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON: {exc}") from None
    if isinstance(doc, list):
        doc = {"channels": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("channels"), list):
        raise ValueError(f'{source} must be {{"channels": [...], "escalation": {{...}}}}')
    unknown = sorted(set(doc) - {"channels", "escalation"})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}")
    channels = tuple(_channel(item, i, env) for i, item in enumerate(doc["channels"]))
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: channel names must be unique, got {names}")
    escalation = None
    policy = doc.get("escalation")
    if policy is not None:
        where = f"{source}: escalation"
        if not isinstance(policy, dict):
            raise ValueError(f"{where} must be an object")
        target = _text(policy, "channel", where, required=True)
        if target not in names:
            raise ValueError(f"{where}: 'channel' must name a configured channel, got {target!r}")
        assert target is not None
        escalation = Escalation(
            channel=target,
            after_s=_number(policy, "after_min", where, 15, 0.01, 7 * 24 * 60) * 60,
            repeat_s=_number(policy, "repeat_min", where, 60, 0.01, 7 * 24 * 60) * 60,
            max_times=int(_number(policy, "max", where, 3, 1, 100)),
        )
    return NotifyConfig(channels, escalation, source)


def load(env: Mapping[str, str], inline_name: str, file_name: str) -> NotifyConfig:
    """From the environment: the JSON in `inline_name`, or the file `file_name` names (not both)."""
    inline, path = env.get(inline_name, "").strip(), env.get(file_name, "").strip()
    if inline and path:
        raise ValueError(f"set {inline_name} or {file_name}, not both")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{file_name}: cannot read {path}: {exc.strerror}") from None
        return parse(text, env, f"{file_name} ({path})")
    if inline:
        return parse(inline, env, inline_name)
    return NO_CHANNELS
