"""Notifications from the service as production runs it (gunicorn, gevent workers): alert:new /
alert:update on SSE, python-socketio and the npm socket.io-client; a receiver down for 30 s
(refused, then 500s, then slower than the timeout) and back; the dispatching worker SIGKILLed
mid-delivery; a second instance on the same database."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.live.notify.conftest import deliveries, drain, overflow
from tests.support.factories import Data, utcnow
from tests.support.live import ENV, wait_until
from tests.support.node_socketio import NodeClient, node_client_script
from tests.support.receivers import HttpReceiver, channels_json, http_receiver, slack, webhook
from tests.support.service import RunningService, run_service
from tests.support.socketio import Probe
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for

DISPATCHER = "notify dispatcher leadership acquired"
VIEW_KEYS = {
    "id",
    "type",
    "severity",
    "message",
    "status",
    "data",
    "timestamp",
    "createdAt",
    "acknowledgedAt",
    "acknowledgedBy",
    "resolvedAt",
}


def env_for(receiver: HttpReceiver, **extra: str) -> dict[str, str]:
    return {
        **ENV,
        "NOTIFY_CHANNELS": channels_json(webhook("ops", receiver), slack("chat", receiver)),
        "ALERT_QUEUE_MAX": "2",
        "NOTIFY_BACKOFF_S": "0.5",
        "NOTIFY_BACKOFF_MAX_S": "8",
        "NOTIFY_MAX_ATTEMPTS": "30",
        "NOTIFY_WINDOW_S": "0",
        **extra,
    }


def json_lines(svc: RunningService) -> list[dict[str, Any]]:
    out = []
    for line in svc.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def retries_exhausted(data: Data, count: int, prefix: str) -> list[dict[str, Any]]:
    """Jobs that failed after their last retry, each an alert (created now: polling sees them)."""
    return [
        data.job(status="failed", retry_count=3, max_retries=3, created_at=utcnow(), job_id=f"{prefix}-{n}") for n in range(count)
    ]


def test_alert_events_reach_every_client_and_acknowledging_updates_them(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    operator = alone.user(user_type="superadmin", email="lead@example.com")
    token = token_for(operator)
    with http_receiver() as hooks, run_service(database_url, tmp_path, env=env_for(hooks)) as svc:
        params = {"events": "alert:new,alert:update"}
        with SSEClient(svc.url, token=token, params=params) as sse:
            probe = Probe(svc.url).connect(token, transports=["websocket"])
            assert probe.call("subscribe:alerts") == {"ok": True}
            node = NodeClient(node_client_script(), svc.url, token, also=["subscribe:alerts"])
            try:
                node.wait_for(lambda r: r["type"] == "ack" and r["event"] == "subscribe:alerts")
                jobs = overflow(alone)

                new = probe.wait_for("alert:new", timeout=20)
                assert VIEW_KEYS <= set(new) and new["status"] == "active" and new["type"] == "queue_overflow"
                assert node.event("alert:new", timeout=20)["id"] == new["id"]
                assert sse.wait_for(lambda e: e.name == "alert:new", timeout=20).data["id"] == new["id"]
                probe.wait_for("job-alert", lambda a: a["type"] == "queue_overflow")  # as today, beside it
                raised = hooks.wait_for(lambda r: r.body.get("kind") == "raised", count=1)[0]
                assert raised.body["alert"]["id"] == new["id"] and raised.signature_ok

                acked = requests.post(
                    f"{svc.url}/admin/system/alerts/{new['id']}/acknowledge",
                    json={"note": "mine"},
                    headers=bearer(token),
                    timeout=10,
                )
                assert acked.status_code == 200, acked.text

                def acknowledged(a: Any) -> bool:
                    return a["id"] == new["id"] and a["status"] == "acknowledged"

                update = probe.wait_for("alert:update", acknowledged)
                assert update["acknowledgedBy"] == "lead@example.com" and update["acknowledgedAt"]
                assert node.event("alert:update", acknowledged)["acknowledgedBy"] == "lead@example.com"
                assert acknowledged(sse.wait_for(lambda e: e.name == "alert:update").data)

                drain(alone, jobs)  # the rule clears: resolved, by itself

                def resolved(a: Any) -> bool:
                    return a["id"] == new["id"] and a["status"] == "resolved"

                update = probe.wait_for("alert:update", resolved, timeout=20)
                assert update["resolvedBy"] is None and update["acknowledgedBy"] == "lead@example.com"
                node.event("alert:update", resolved, timeout=20)
                told = hooks.wait_for(lambda r: r.path == "/ops" and r.body.get("kind") == "resolved")[0]
                assert "resolved after" in told.body["title"]
            finally:
                node.close()
                probe.close()


def test_receiver_down_for_30s_then_back_loses_nothing(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """Refused for 10 s, 500s for 10 s, slower than the channel's timeout for 10 s; then up."""
    receiver = HttpReceiver()
    channels = channels_json(webhook("ops", receiver, timeout_s=1))
    with run_service(database_url, tmp_path, env=env_for(receiver, NOTIFY_CHANNELS=channels)) as svc:
        wait_until(lambda: DISPATCHER in svc.log(), 15, "a dispatcher")
        started = time.monotonic()
        retries_exhausted(alone, 3, "refused")  # raised while the port is closed
        time.sleep(10)
        refused_phase = {d["delivery_id"] for d in deliveries(engine, settings)}
        receiver.mode = "error"
        receiver.start()
        retries_exhausted(alone, 3, "erroring")
        time.sleep(10)
        receiver.mode, receiver.slow_s = "slow", 2.5
        retries_exhausted(alone, 3, "slow")
        time.sleep(10)
        receiver.mode = "ok"
        back = time.time()
        try:
            wait_until(lambda: all(d["status"] == "delivered" for d in deliveries(engine, settings)), 40, "all delivered")
            settled = time.time()
            rows = deliveries(engine, settings)
            got = receiver.on("/ops")
            ids = [r.headers["X-Delivery-Id"] for r in got]
            assert len(rows) == 9
            # Every one arrived (a request answered after the sender's timeout counts as failed to
            # the sender, which sends it again: the receiver sees that id twice and drops the repeat).
            assert sorted(set(ids)) == sorted(d["delivery_id"] for d in rows)
            # Backoff: a delivery's attempts come further apart (0.5 s doubling, jittered, capped
            # at NOTIFY_BACKOFF_MAX_S=8 s), not at a fixed pace: 30 s down cost each a few attempts.
            per_delivery: dict[str, list[float]] = {}
            for delivery_id, at in receiver.arrived:
                per_delivery.setdefault(delivery_id, []).append(at)
            # (those raised once the receiver answered: it saw every attempt of theirs)
            gaps = [
                [b - a for a, b in zip(times, times[1:], strict=False)]
                for delivery_id, times in per_delivery.items()
                if len(times) >= 5 and delivery_id not in refused_phase
            ]
            assert gaps, per_delivery
            for seq in gaps:
                assert max(seq) >= 2 * min(seq[:2]), seq  # growing
                assert max(seq) <= 8 + 1 + 2, seq  # capped (+ the 1 s timeout of a slow attempt, + slack)
            assert all(d["attempts"] <= 12 for d in rows), rows
            failures = [d["attempts"] for d in rows]
            print(
                f"\noutage: 9 alerts over 30 s down; {len(receiver.arrived)} requests reached the receiver, "
                f"{sum(failures) - 9} failed attempts in all (attempts per delivery {sorted(failures)}), "
                f"{len(got)} answered 200 ({len(set(ids))} distinct ids; the repeats are answers to attempts the sender had timed out on), all delivered {settled - back:.1f} s after it came back; "
                f"run {time.monotonic() - started:.0f} s"
            )
            metrics = requests.get(f"{svc.url}/metrics", timeout=5).text
            assert 'admin_service_notify_failures_total{channel="ops",outcome="retry"}' in metrics
        finally:
            receiver.stop()


def test_dispatching_worker_killed_mid_delivery_is_delivered_after_failover(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with (
        http_receiver(mode="slow", slow_s=30) as hooks,
        run_service(
            database_url, tmp_path, workers=2, env=env_for(hooks, NOTIFY_CHANNELS=channels_json(webhook("ops", hooks)))
        ) as svc,
    ):
        wait_until(lambda: DISPATCHER in svc.log(), 15, "a dispatcher")
        retries_exhausted(alone, 1, "killed")
        wait_until(lambda: len(hooks.arrived) >= 1, 20, "a delivery in flight")
        (dispatcher_pid,) = [line["pid"] for line in json_lines(svc) if line.get("msg") == DISPATCHER]
        assert dispatcher_pid in svc.workers()
        in_flight = hooks.arrived[0][0]
        os.kill(dispatcher_pid, signal.SIGKILL)
        hooks.mode = "ok"
        killed = time.monotonic()
        got = hooks.wait_for(lambda r: r.headers.get("X-Delivery-Id") == in_flight, timeout=30)
        print(
            f"\nfailover: dispatcher SIGKILLed mid-delivery -> delivered by another worker in {time.monotonic() - killed:.1f} s"
        )
        assert got[0].signature_ok
        wait_until(lambda: all(d["status"] == "delivered" for d in deliveries(engine, settings)), 10, "both delivered")
        leaders = [line["pid"] for line in json_lines(svc) if line.get("msg") == DISPATCHER]
        assert len(leaders) == 2 and leaders[1] != dispatcher_pid


def test_a_second_instance_sends_each_notification_once(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with http_receiver() as hooks:
        env = env_for(hooks)
        with run_service(database_url, tmp_path, env=env) as a, run_service(database_url, tmp_path, env=env) as b:
            wait_until(lambda: DISPATCHER in a.log() + b.log(), 15, "a dispatcher")
            retries_exhausted(alone, 10, "two")
            got = hooks.wait_for(lambda r: True, count=20, timeout=30)
            time.sleep(2)  # anything sent twice would have arrived by now
            ids = Counter(r.headers["X-Delivery-Id"] for r in hooks.received)
            assert len(ids) == 20 and set(ids.values()) == {1}, ids
            assert len(got) == 20
            assert (DISPATCHER in a.log()) != (DISPATCHER in b.log())  # one of them dispatches
