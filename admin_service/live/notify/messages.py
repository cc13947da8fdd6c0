"""What a notification says, the same on every channel: what, how bad, since when, the figures
with their units, and a link to the dashboard; a resolution says "resolved after 23 min".

`render` turns an outbox message (the alert as it was when the change happened) into a
`Rendered` message, which each sender lays out its own way (webhook JSON, Slack blocks, an
e-mail's plain-text and HTML parts).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from admin_service.clock import parse_instant
from admin_service.names import HIGH_FAILURE_RATE, PROCESSING_TIMEOUT, QUEUE_OVERFLOW, RETRIES_EXHAUSTED

TITLES = {
    HIGH_FAILURE_RATE: "High failure rate",
    QUEUE_OVERFLOW: "Queue overflow",
    PROCESSING_TIMEOUT: "Processing timeout",
    RETRIES_EXHAUSTED: "Retries exhausted",
}
DIGEST_SHOWN = 20


@dataclass(frozen=True)
class Rendered:
    kind: str  # raised | resolved | escalation | digest | test
    title: str  # one line: "[HIGH] High failure rate"
    summary: str  # the alert's own message, or what the digest held back
    facts: tuple[tuple[str, str], ...]  # (label, value with its unit)
    link: str
    severity: str

    @property
    def text(self) -> str:
        lines = [self.title, self.summary, *(f"{label}: {value}" for label, value in self.facts), f"Dashboard: {self.link}"]
        return "\n".join(line for line in lines if line)

    @property
    def html(self) -> str:
        rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.facts)
        return (
            f"<html><body><h2>{html.escape(self.title)}</h2><p>{html.escape(self.summary)}</p>"
            f"<table>{rows}</table><p><a href='{html.escape(self.link, quote=True)}'>Open the dashboard</a></p></body></html>"
        )


def duration(seconds: float) -> str:
    """23 s, 23 min, 2 h 5 min, 3 d 4 h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def _instant(value: Any) -> datetime | None:
    return parse_instant(value) if isinstance(value, str) and value else None


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def figures(alert_type: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The alert's figures with units, per rule."""
    if alert_type == HIGH_FAILURE_RATE:
        return [
            ("Failure rate", f"{float(data.get('rate', 0)):.0%} (threshold {float(data.get('threshold', 0)):.0%})"),
            (
                "Failed jobs",
                f"{_num(data.get('failed'))} of {_num(data.get('finished'))} finished in the last {data.get('windowMinutes')} min",
            ),
        ]
    if alert_type == QUEUE_OVERFLOW:
        age = data.get("oldestAgeSeconds")
        out = [("Queued jobs", f"{_num(data.get('queued'))} jobs (max {_num(data.get('maxQueued'))})")]
        if age is not None:
            out.append(
                ("Oldest queued job", f"waiting {duration(float(age))} (max {duration(float(data.get('maxAgeSeconds') or 0))})")
            )
        return out
    if alert_type == PROCESSING_TIMEOUT:
        out = [
            (
                "Stuck jobs",
                f"{_num(data.get('count'))} jobs processing longer than {duration(float(data.get('timeoutSeconds') or 0))}",
            ),
        ]
        if data.get("oldestStartedAt"):
            out.append(("Oldest started", str(data["oldestStartedAt"])))
        if data.get("jobIds"):
            out.append(("Job ids", ", ".join(str(j) for j in data["jobIds"])))
        return out
    if alert_type == RETRIES_EXHAUSTED:
        job = data.get("job") or {}
        out = [
            ("Job", f"{job.get('job_id') or job.get('id')} ({job.get('assessment_name') or 'no assessment'})"),
            ("Retries", f"{job.get('retry_count')} of {job.get('max_retries')}"),
        ]
        if job.get("error_message"):
            out.append(("Error", str(job["error_message"])[:300]))
        return out
    return [(str(k), str(v)) for k, v in data.items()]


def link(base_url: str, alert_id: Any = None) -> str:
    return f"{base_url}/admin/dashboard" + (f"#alert-{alert_id}" if alert_id is not None else "")


def render(
    kind: str, message: Mapping[str, Any], base_url: str, now: datetime, items: list[dict[str, Any]] | None = None
) -> Rendered:
    """The message for one delivery (`items`: what a digest held back)."""
    if kind == "test":
        return Rendered(kind, "[TEST] admin-service notification test", str(message.get("text", "")), (), link(base_url), "low")
    alert: Mapping[str, Any] = message.get("alert") or {}
    if kind == "digest":
        items = items or []
        alert_type = str(message.get("alert_type") or (items[0]["alert"]["type"] if items else ""))
        held = tuple(
            (str(item["alert"].get("createdAt")), f"{item['alert'].get('message')} (now {item.get('status_now') or 'unknown'})")
            for item in items[:DIGEST_SHOWN]
        )
        more = f" ({len(items) - DIGEST_SHOWN} more not listed)" if len(items) > DIGEST_SHOWN else ""
        title = f"[DIGEST] {len(items)} more {TITLES.get(alert_type, alert_type)} alerts held back{more}"
        return Rendered(
            kind, title, "At most one message per alert type per window; these came after it.", held, link(base_url), "low"
        )
    alert_type = str(alert.get("type"))
    name = TITLES.get(alert_type, alert_type)
    severity = str(alert.get("severity") or "medium")
    since = _instant(alert.get("createdAt"))
    facts: list[tuple[str, str]] = [("Severity", severity)]
    if since is not None:
        facts.append(("Since", f"{alert.get('createdAt')} ({duration((now - since).total_seconds())} ago)"))
    facts.extend(figures(alert_type, alert.get("data") or {}))
    target = link(base_url, alert.get("id"))
    if kind == "resolved":
        ended = _instant(alert.get("resolvedAt")) or now
        lasted = duration((ended - since).total_seconds()) if since else "an unknown time"
        by = f" by {alert['resolvedBy']}" if alert.get("resolvedBy") else " (the rule cleared)"
        note = f" Note: {alert['resolveNote']}" if alert.get("resolveNote") else ""
        return Rendered(
            kind, f"[RESOLVED] {name} resolved after {lasted}", f"{name} resolved{by} after {lasted}.{note}", (), target, severity
        )
    prefix = f"[{severity.upper()}]"
    summary = str(alert.get("message") or name)
    if kind == "escalation":
        prefix = f"[ESCALATION {message.get('escalation')}/{message.get('of')}] [{severity.upper()}]"
        summary = f"Unacknowledged for {duration((now - since).total_seconds()) if since else '?'}: {summary}"
    elif message.get("flapping"):
        summary += " (this rule cleared and fired again recently: flapping)"
    return Rendered(kind, f"{prefix} {name}", summary, tuple(facts), target, severity)
