"""One alert, one message per matching channel, to real receivers: a webhook (signature
verified), Slack (incoming-webhook format), e-mail (aiosmtpd, parsed); severity and type
routing; the resolution message; acknowledging stops escalation; flapping and the per-window
limit with its digest; dead after N attempts."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine

from admin_service import metrics
from admin_service.live.connection import transaction
from admin_service.live.episodes import Episodes
from admin_service.live.log import EventLog
from tests.live.notify.conftest import deliveries, drain, episodes, overflow
from tests.support.factories import Data, utcnow
from tests.support.receivers import channels_json, http_receiver, mail, slack, smtp_receiver, wait_mail, webhook

OPERATOR = {"id": "00000000-0000-0000-0000-000000000001", "email": "op@example.com", "username": "op"}


def operator_change(leader: Any, change: str, episode_id: int) -> None:
    """An operator's acknowledge/resolve as the REST route runs it (one transaction)."""
    log = EventLog(leader.settings.admin_schema)
    with leader.conn.cursor() as cur, transaction(cur):
        log.lock_for_append(cur)
        act = getattr(Episodes(leader.settings), change)
        _, events = act(cur, episode_id, OPERATOR, "on it")
        log.append_and_notify(cur, events)


def test_one_alert_one_message_per_matching_channel(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks, smtp_receiver() as (smtp_port, inbox):
        one = leader(
            channels_json(
                webhook("ops", hooks),
                slack("chat", hooks),
                mail("mail", smtp_port),
                webhook("critical-only", hooks, min_severity="critical"),  # queue_overflow is medium
                webhook("failures-only", hooks, alert_types=["high_failure_rate"]),
            ),
            DASHBOARD_URL="https://admin.example.com",
        )
        overflow(clean)
        one.evaluate()
        one.evaluate()  # the rule still holds: the same episode, nothing new
        assert one.dispatch() == 3
        assert one.dispatch() == 0

        got = hooks.wait_for(lambda r: True, count=2)
        assert sorted(r.path for r in got) == ["/chat", "/ops"]
        (ops,) = hooks.on("/ops")
        assert ops.signature_ok is True
        assert ops.body["kind"] == "raised"
        assert ops.headers["X-Delivery-Id"] == ops.body["deliveryId"]
        alert = ops.body["alert"]
        assert alert["type"] == "queue_overflow" and alert["status"] == "active" and alert["severity"] == "medium"
        assert alert["data"]["queued"] == 3
        assert "3 jobs (max 2)" in ops.body["text"]  # the figures, with their units
        assert ops.body["link"] == f"https://admin.example.com/admin/dashboard#alert-{alert['id']}"

        (chat,) = hooks.on("/chat")
        assert chat.signature_ok is None
        assert chat.body["text"].startswith("[MEDIUM] Queue overflow")
        button = chat.body["blocks"][-1]["elements"][0]
        assert button["url"] == ops.body["link"]

        (message,) = wait_mail(inbox)
        assert message["Subject"] == "[MEDIUM] Queue overflow"
        assert message["To"] == "oncall@example.com"
        plain = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert plain is not None and html is not None
        assert "Queued jobs: 3 jobs (max 2)" in plain.get_content()
        assert ops.body["link"] in html.get_content()
        assert message["X-Delivery-Id"] in {d["delivery_id"] for d in deliveries(engine, one.settings)}

        rows = deliveries(engine, one.settings)
        assert sorted((d["channel"], d["status"]) for d in rows) == [
            ("chat", "delivered"),
            ("mail", "delivered"),
            ("ops", "delivered"),
        ]


def test_resolution_says_how_long_and_goes_to_those_told(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        one = leader(channels_json(webhook("ops", hooks), slack("chat", hooks)))
        jobs = overflow(clean)
        one.evaluate()
        one.dispatch()
        drain(clean, jobs)
        one.evaluate()
        assert one.dispatch() == 2
        resolved = hooks.wait_for(lambda r: r.body.get("kind") == "resolved" or "RESOLVED" in r.body.get("text", ""), count=2)
        ops = next(r for r in resolved if r.path == "/ops")
        assert ops.body["alert"]["status"] == "resolved"
        assert ops.body["alert"]["resolvedBy"] is None  # the rule cleared
        assert ops.body["title"].startswith("[RESOLVED] Queue overflow resolved after ")
        (episode,) = episodes(engine, one.settings)
        assert episode["status"] == "resolved" and episode["resolution"]["resolved"] is True


def test_severity_and_type_routing(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        one = leader(
            channels_json(
                webhook("high", hooks, min_severity="high"),
                webhook("queue", hooks, alert_types=["queue_overflow"]),
                webhook("jobs", hooks, alert_types=["retries_exhausted"]),
            ),
            ALERT_SEVERITIES="queue_overflow=high",
        )
        overflow(clean)
        one.evaluate()
        one.dispatch()
        hooks.wait_for(lambda r: True, count=2)
        time.sleep(0.3)
        assert sorted(r.path for r in hooks.received) == ["/high", "/queue"]


def test_acknowledge_stops_escalation(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        # the first escalation after 0.6 s, then every 0.6 s, at most 3
        one = leader(
            json.dumps(
                {
                    "channels": [webhook("ops", hooks), webhook("pager", hooks, escalation_only=True)],
                    "escalation": {"channel": "pager", "after_min": 0.01, "repeat_min": 0.01, "max": 3},
                }
            )
        )
        overflow(clean)
        one.evaluate()
        one.dispatch()
        assert [r.path for r in hooks.received] == ["/ops"]  # not the escalation-only channel
        time.sleep(0.7)
        assert one.escalate() == 1
        one.dispatch()
        (first,) = hooks.wait_for(lambda r: r.path == "/pager")
        assert first.body["kind"] == "escalation" and first.body["escalation"] == {"number": 1, "of": 3}
        assert first.body["title"].startswith("[ESCALATION 1/3]")

        (episode,) = episodes(engine, one.settings)
        operator_change(one, "acknowledge", episode["id"])
        time.sleep(1.5)  # two more repeat intervals
        assert one.escalate() == 0
        one.dispatch()
        assert len(hooks.on("/pager")) == 1


def test_escalation_repeats_bounded(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        one = leader(
            json.dumps(
                {
                    "channels": [webhook("pager", hooks, escalation_only=True)],
                    "escalation": {"channel": "pager", "after_min": 0.01, "repeat_min": 0.01, "max": 2},
                }
            )
        )
        overflow(clean)
        one.evaluate()
        for _ in range(6):
            time.sleep(0.7)
            one.escalate()
            one.dispatch()
        assert [r.body["escalation"]["number"] for r in hooks.on("/pager")] == [1, 2]


def test_operator_resolution_is_announced(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        one = leader(channels_json(webhook("ops", hooks)))
        overflow(clean)
        one.evaluate()
        one.dispatch()
        (episode,) = episodes(engine, one.settings)
        operator_change(one, "resolve", episode["id"])
        one.dispatch()
        (resolved,) = hooks.wait_for(lambda r: r.body["kind"] == "resolved")
        assert resolved.body["alert"]["resolvedBy"] == "op@example.com"
        assert "resolved by op@example.com after" in resolved.body["text"]
        # The rule still holds and then clears: that episode is over already, nothing more is sent.
        one.evaluate()
        assert one.dispatch() == 0


def dispatch_until(one: Any, hooks: Any, predicate: Any, timeout: float = 20) -> Any:
    """Dispatch rounds until the receiver has a matching message (a deferred one falls due)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        one.dispatch()
        found = [r for r in hooks.received if predicate(r)]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"nothing matching arrived: {hooks.summary()}")


def test_flapping_rule_is_held_back(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        # A gap far longer than the three flaps below take, even on a loaded machine.
        one = leader(channels_json(webhook("ops", hooks)), ALERT_MIN_EPISODE_GAP_S="8", NOTIFY_WINDOW_S="0")
        jobs = overflow(clean)
        one.evaluate()
        one.dispatch()  # the first episode is told
        for _ in range(3):  # then it clears and fires again, three times within the gap
            drain(clean, jobs)
            one.evaluate()
            one.dispatch()
            jobs = overflow(clean)
            one.evaluate()
            one.dispatch()
        kinds = [r.body["kind"] for r in hooks.received]
        # the first raise, its resolution; the re-fires wait out the gap and each cleared in it
        assert kinds == ["raised", "resolved"], kinds
        assert len(episodes(engine, one.settings)) == 4
        # The last one still holds when its gap has passed: it is told then, marked flapping.
        second = dispatch_until(one, hooks, lambda r: r.body["kind"] == "raised" and r is not hooks.received[0])
        assert "flapping" in second.body["text"]
        assert [r.body["kind"] for r in hooks.received] == ["raised", "resolved", "raised"]
        held = [d for d in deliveries(engine, one.settings) if d["status"] == "held"]
        assert [d["held_reason"] for d in held] == ["resolved before it was sent"] * 2


def test_one_message_per_channel_and_type_per_window_then_a_digest(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver() as hooks:
        one = leader(channels_json(webhook("ops", hooks)), NOTIFY_WINDOW_S="2")
        for n in range(4):  # four jobs exhaust their retries: four alerts of one type
            clean.job(status="failed", retry_count=3, max_retries=3, created_at=utcnow(), job_id=f"storm-{n}")
        capture = one.capturer
        capture.capture_once(one.conn)
        one.dispatch()
        one.dispatch()
        raised = [r for r in hooks.received if r.body["kind"] == "raised"]
        assert len(raised) == 1
        digest = dispatch_until(one, hooks, lambda r: r.body["kind"] == "digest")
        assert len(digest.body["held"]) == 3
        assert digest.body["title"].startswith("[DIGEST] 3 more Retries exhausted alerts held back")
        statuses = sorted(d["status"] for d in deliveries(engine, one.settings))
        assert statuses == ["delivered", "delivered", "held", "held", "held"]


def test_dead_after_max_attempts_counted(leader: Any, clean: Data, engine: Engine) -> None:
    with http_receiver(mode="error") as hooks:
        one = leader(channels_json(webhook("ops", hooks)), NOTIFY_MAX_ATTEMPTS="3", NOTIFY_BACKOFF_S="0.05")
        before = metrics.NOTIFY_FAILURES.labels("ops", "dead")._value.get()
        overflow(clean)
        one.evaluate()
        deadline = time.monotonic() + 10
        while deliveries(engine, one.settings)[0]["status"] == "pending" and time.monotonic() < deadline:
            one.dispatch()
            time.sleep(0.05)
        (row,) = deliveries(engine, one.settings)
        assert row["status"] == "dead" and row["attempts"] == 3
        assert row["last_error"].startswith("HTTP 500")
        assert len(hooks.attempts) == 3
        assert metrics.NOTIFY_FAILURES.labels("ops", "dead")._value.get() == before + 1
