"""The Socket.IO endpoint (/admin/socket.io) against the service under gunicorn + gevent,
driven by python-socketio's client: every transport, subscriptions and filters, the
refusals a dashboard shows, token expiry, limits, bad input, origins, and 200 sockets.

One worker; long-polling across two workers is test_socketio_workers.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
import websocket
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.factories import Data
from tests.support.live import wait_until
from tests.support.postgres import table_locked
from tests.support.service import RunningService, run_service, worker_pids
from tests.support.socketio import ALERT_QUEUE_MAX, ENV, MAX_PER_USER, PATH, Probe, change_status, fresh_job, is_job
from tests.support.tokens import token_for


@pytest.fixture(scope="module")
def first_workers(service: RunningService) -> list[int]:
    return worker_pids(service)


@pytest.fixture
def live(service: RunningService, first_workers: list[int], data: Data) -> Iterator[RunningService]:
    """The service, checked after each test: still healthy, and its worker never restarted
    (a crashed gevent worker is silently replaced by gunicorn, dropping every socket)."""
    yield service
    assert requests.get(f"{service.url}/health", timeout=5).status_code == 200
    assert worker_pids(service) == first_workers, f"the worker was replaced:\n{service.log()[-3000:]}"


@pytest.fixture
def probes(live: RunningService) -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def make(**client_options: Any) -> Probe:
        probe = Probe(live.url, **client_options)
        made.append(probe)
        return probe

    yield make
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(Probe.close, made))


def raise_queue_overflow(engine: Engine, settings: Settings, data: Data) -> None:
    """Start a new queue_overflow episode: forget earlier episodes, then queue too many jobs."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{settings.admin_schema}".alert_state')
    for _ in range(ALERT_QUEUE_MAX + 1):
        data.job(status="queued")


def is_overflow(alert: Any) -> bool:
    return alert["type"] == "queue_overflow" and not alert["data"].get("resolved") and alert["data"]["queued"] > ALERT_QUEUE_MAX


# --- every transport: connect, stats, job-update from the database, job-alert ---------------


@pytest.mark.parametrize(
    ("transports", "expected"),
    [(["polling"], "polling"), (["websocket"], "websocket"), (None, "websocket")],
    ids=["polling-only", "websocket-only", "polling-then-upgrade"],
)
def test_transport_delivers_stats_updates_and_alerts(
    probes: Callable[..., Probe],
    data: Data,
    admin: dict[str, Any],
    engine: Engine,
    settings: Settings,
    transports: list[str] | None,
    expected: str,
) -> None:
    job = fresh_job(data, status="queued")
    probe = probes().connect(token_for(admin), transports=transports)
    assert probe.sio.transport() == expected

    # job-stats on connect, before any subscription: the dashboard's first paint.
    stats = probe.wait_for("job-stats", timeout=5)
    assert {"overview", "today", "performance", "dailyMetrics", "computedAt"} <= set(stats)
    assert set(stats["overview"]) >= {"total", "queued", "processing", "completed", "failed", "cancelled"}

    assert probe.call("subscribe:jobs") == {"ok": True}
    assert probe.call("subscribe:alerts") == {"ok": True}
    # Subscribers get job-stats every JOB_STATS_INTERVAL_MS (500 ms here), with today's figures.
    ticks = probe.wait_count("job-stats", 2, since=probe.mark(), timeout=3)
    assert ticks[-1]["overview"]["total"] >= 1  # computed after the job was written

    change_status(data, job, "failed")
    update = probe.wait_for("job-update", is_job(job, "failed"), timeout=10)
    assert update["event"] == "failed"
    assert update["job"]["status"] == "failed" and update["job"]["job_id"] == job["job_id"]
    assert update["timestamp"]

    raise_queue_overflow(engine, settings, data)
    alert = probe.wait_for("job-alert", is_overflow, timeout=10)
    assert alert["severity"] == "medium"
    assert str(ALERT_QUEUE_MAX) in alert["message"] and alert["timestamp"]


# --- refusals ----------------------------------------------------------------------------


def test_refusals_say_why(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    user = data.user(user_type="user")
    inactive = data.user(user_type="admin", is_active=False)
    assert probes().refused_with(None) == "Authentication required"
    assert probes().refused_with("") == "Authentication required"
    assert probes().refused_with("not-a-token") == "Invalid or expired token"
    assert probes().refused_with(token_for(admin, extra={"exp": int(time.time()) - 60})) == "Invalid or expired token"
    forged = token_for(admin)[:-4] + "AAAA"
    assert probes().refused_with(forged) == "Invalid or expired token"
    assert probes().refused_with(token_for(inactive)) == "Invalid or expired token"
    assert probes().refused_with(token_for(user)) == "Admin access required"
    # The same refusals over WebSocket only (no HTTP handshake to lean on).
    assert probes().refused_with(token_for(user), transports=["websocket"]) == "Admin access required"
    assert probes().refused_with(None, transports=["websocket"]) == "Authentication required"
    # And an admin with a good token gets in.
    assert probes().connect(token_for(admin)).sio.connected


def test_token_query_parameter_for_old_clients(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    for transports in (["polling"], ["websocket"]):
        probe = probes().connect(None, query=f"?token={token_for(admin)}", transports=transports)
        assert "overview" in probe.wait_for("job-stats", timeout=5)
    user = data.user()
    assert probes().refused_with(None, query=f"?token={token_for(user)}") == "Admin access required"
    assert probes().refused_with(None, query="?token=garbage") == "Invalid or expired token"


def test_token_expiry_disconnects(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    short = probes().connect(token_for(admin, ttl_seconds=2), transports=["websocket"])
    lasting = probes().connect(token_for(admin), transports=["websocket"])
    assert short.call("subscribe:jobs") == {"ok": True}
    short.sio.emit("disconnect")  # a fake lifecycle event must not take it off the expiry watch
    error = short.wait_for("error", lambda e: e.get("code") == "TOKEN_EXPIRED", timeout=6)
    assert error["message"] == "Token expired"
    assert short.disconnected.wait(3)
    assert not short.sio.connected
    # Only the expired socket is affected.
    assert lasting.sio.connected
    assert "overview" in lasting.call("request:job-stats")


# --- subscriptions -----------------------------------------------------------------------


def test_unsubscribe_stops_delivery(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    token = token_for(admin)
    leaving, staying = probes().connect(token), probes().connect(token, transports=["websocket"])
    assert leaving.call("subscribe:jobs") == {"ok": True}
    assert staying.call("subscribe:jobs") == {"ok": True}
    first, second = fresh_job(data), fresh_job(data)

    change_status(data, first, "processing")
    leaving.wait_for("job-update", is_job(first, "processing"))
    staying.wait_for("job-update", is_job(first, "processing"))

    assert leaving.call("unsubscribe:jobs") == {"ok": True}
    mark = leaving.mark()
    change_status(data, second, "completed")
    assert staying.wait_for("job-update", is_job(second, "completed"))["event"] == "completed"
    time.sleep(1.2)  # two stats intervals: the unsubscribed socket gets neither updates nor stats
    assert leaving.matching("job-update", since=mark) == []
    assert leaving.matching("job-stats", since=mark) == []
    assert leaving.sio.connected


def test_filtered_subscription_only_gets_matching_updates(
    probes: Callable[..., Probe], data: Data, admin: dict[str, Any]
) -> None:
    token = token_for(admin)
    failed_only, everything = probes().connect(token), probes().connect(token)
    assert failed_only.call("subscribe:jobs", {"status": "failed"}) == {"ok": True}
    assert everything.call("subscribe:jobs") == {"ok": True}
    jobs = {status: fresh_job(data, status="processing") for status in ("completed", "failed", "cancelled")}
    for status, job in jobs.items():
        change_status(data, job, status)

    for status, job in jobs.items():
        assert everything.wait_for("job-update", is_job(job, status))["event"] == status
    failed_only.wait_for("job-update", is_job(jobs["failed"], "failed"))
    time.sleep(0.5)
    got = failed_only.matching("job-update")
    assert {u["job"]["status"] for u in got} == {"failed"}, got
    # A filtered subscription still gets the periodic stats.
    mark = failed_only.mark()
    failed_only.wait_for("job-stats", since=mark, timeout=3)


def test_bad_filter_gets_an_error_and_no_subscription(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    probe = probes().connect(token_for(admin))
    for bad, says in [
        ({"status": "exploded"}, "unknown status"),
        ({"colour": "red"}, "unknown filter field"),
        ("failed", "filter must be an object"),
        ({"assessment_name": 42}, "assessment_name"),
    ]:
        mark = probe.mark()
        ack = probe.call("subscribe:jobs", bad)
        assert ack["ok"] is False and says in ack["error"]
        error = probe.wait_for("error", since=mark, timeout=3)
        assert error["message"].startswith("subscribe:jobs:") and says in error["message"]
    # A rejected filter is not silently taken as "everything".
    job = fresh_job(data)
    watcher = probes().connect(token_for(admin))
    assert watcher.call("subscribe:jobs") == {"ok": True}
    change_status(data, job, "failed")
    watcher.wait_for("job-update", is_job(job, "failed"))
    time.sleep(0.5)
    assert probe.matching("job-update") == []


def test_request_job_stats_answers_only_the_asker(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    for status in ("failed", "failed", "completed", "queued"):
        data.job(status=status)
    token = token_for(admin)
    asker, bystander = probes().connect(token), probes().connect(token, transports=["websocket"])
    asker.wait_for("job-stats")
    bystander.wait_for("job-stats")
    time.sleep(0.6)  # the figures are shared for one interval: let them catch up with the rows
    mark_asker, mark_bystander = asker.mark(), bystander.mark()

    answer = asker.call("request:job-stats")
    assert answer["overview"]["total"] == 4
    assert answer["overview"]["failed"] == 2 and answer["overview"]["completed"] == 1 and answer["overview"]["queued"] == 1
    event = asker.wait_for("job-stats", since=mark_asker, timeout=3)
    assert event["overview"] == answer["overview"]
    time.sleep(1.0)  # neither subscribed: no periodic stats, and nothing of the asker's answer
    assert bystander.matching("job-stats", since=mark_bystander) == []
    assert len(asker.matching("job-stats", since=mark_asker)) == 1


# --- bad input, limits -------------------------------------------------------------------


def raw_socketio(service: RunningService, token: str, origin: str | None = None) -> websocket.WebSocket:
    """A Socket.IO connection by hand over WebSocket: Engine.IO open, then CONNECT with auth."""
    ws = websocket.create_connection(
        service.url.replace("http://", "ws://") + f"{PATH}/?EIO=4&transport=websocket",
        timeout=5,
        **({"origin": origin} if origin else {}),
    )
    opened = ws.recv()
    assert opened.startswith("0{"), opened
    ws.send("40" + json.dumps({"token": token}))
    # The protocol's order: the CONNECT answer comes before any event (job-stats follows it).
    connected = raw_next(ws)
    assert connected.startswith("40{") and '"sid"' in connected, connected
    assert raw_next(ws).startswith('42["job-stats",')
    return ws


def test_websockets_are_served_without_per_message_compression(live: RunningService, data: Data, admin: dict[str, Any]) -> None:
    """Browsers and socket.io-client offer permessage-deflate; accepted, every socket would deflate
    every broadcast itself (with 1,000 sockets, 40 % of the worker's CPU and half of an update's
    fan-out time). Declined, the socket works as before and its frames are plain text."""
    ws = websocket.create_connection(
        live.url.replace("http://", "ws://") + f"{PATH}/?EIO=4&transport=websocket",
        timeout=5,
        header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    )
    try:
        headers = ws.getheaders() or {}
        assert "sec-websocket-extensions" not in headers, headers
        assert ws.recv().startswith("0{")
        ws.send("40" + json.dumps({"token": token_for(admin)}))
        assert raw_next(ws).startswith("40{")
        assert raw_next(ws).startswith('42["job-stats",')
        ws.send('421["subscribe:jobs"]')
        assert raw_next(ws).startswith("431[")
        job = fresh_job(data)
        change_status(data, job, "completed")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            frame = raw_next(ws)
            if frame.startswith('42["job-update",') and str(job["id"]) in frame and '"completed"' in frame:
                break
        else:
            raise AssertionError("no job-update on the uncompressed socket")
    finally:
        ws.close()


def raw_next(ws: websocket.WebSocket) -> str:
    """The next Socket.IO frame, answering Engine.IO pings on the way."""
    while True:
        frame = ws.recv()
        if frame == "2":
            ws.send("3")
            continue
        return frame


def test_unknown_events_and_malformed_payloads_get_errors(
    probes: Callable[..., Probe], live: RunningService, data: Data, admin: dict[str, Any]
) -> None:
    probe = probes().connect(token_for(admin), transports=["websocket"])
    mark = probe.mark()
    probe.sio.emit("drop:tables", {"all": True})
    assert "Unknown event 'drop:tables'" in probe.wait_for("error", since=mark, timeout=3)["message"]
    for payload, says in [
        ({"status": ["failed", {"nested": []}]}, "unknown status"),
        (["a", "list"], "filter must be an object"),
        (({"status": "failed"}, "IQ"), "takes one argument"),  # two arguments
    ]:
        mark = probe.mark()
        ack = probe.sio.call("subscribe:jobs", payload, timeout=5)
        assert ack["ok"] is False and says in ack["error"]
        assert says in probe.wait_for("error", since=mark, timeout=3)["message"]
    # Extra arguments and binary payloads to argument-less events are tolerated.
    assert probe.sio.call("unsubscribe:jobs", (1, 2, 3), timeout=5) == {"ok": True}
    assert probe.sio.call("subscribe:alerts", b"\x00\xff", timeout=5) == {"ok": True}

    # Below python-socketio's client: broken Socket.IO packets over a raw WebSocket.
    raw = raw_socketio(live, token_for(admin))
    for garbage in ['42["subscribe:jobs",{', "42{}", "42[]", "4x", "4" + "9" * 50, '45-["x"]']:
        raw.send(garbage)
        assert raw_next(raw) == '42["error",{"message":"Malformed Socket.IO packet"}]', garbage
    raw.send('421["request:job-stats"]')  # the same connection still answers, with its ack
    assert raw_next(raw).startswith('42["job-stats",{"overview"')
    assert raw_next(raw).startswith('431[{"overview"')
    raw.close()
    # Not even Engine.IO: python-engineio drops that connection (logged), nothing else.
    broken = raw_socketio(live, token_for(admin))
    broken.send("\x00")
    broken.close()

    time.sleep(0.3)
    assert requests.get(f"{live.url}/health", timeout=5).status_code == 200
    # The figures are the deployment's, shared for an interval: the previous test's job may still
    # be counted for that long after this test's table was emptied.
    wait_until(lambda: probe.call("request:job-stats")["overview"]["total"] == 0, 10, "the emptied table's stats")


def test_lifecycle_events_cannot_be_faked(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    """python-socketio dispatches a client EVENT named "disconnect" to the disconnect handler: a
    client must not use that to leave the per-user count, nor "connect" to log in again."""
    token = token_for(admin)
    sockets = [probes().connect(token, transports=["websocket"]) for _ in range(MAX_PER_USER)]
    faker = sockets[0]
    assert faker.call("subscribe:jobs") == {"ok": True}
    for name, args in [("disconnect", None), ("connect", ({"QUERY_STRING": ""}, {"token": token}))]:
        mark = faker.mark()
        faker.sio.emit(name, args)
        assert faker.wait_for("error", since=mark, timeout=3)["message"] == f"{name!r} is a reserved event name"
    assert probes().refused_with(token) == "Too many connections for this user"
    # The faker's session is intact: still subscribed, still answered.
    job = fresh_job(data)
    change_status(data, job, "failed")
    faker.wait_for("job-update", is_job(job, "failed"))
    assert "overview" in faker.call("request:job-stats")


@contextmanager
def users_table_locked(engine: Engine) -> Iterator[None]:
    """Hold auth.users locked, as a long migration by the users' owner would: lookups wait."""
    with table_locked(engine, "auth.users"):
        yield


def test_connect_during_database_trouble_is_refused_with_a_reason(
    probes: Callable[..., Probe], engine: Engine, data: Data
) -> None:
    token = token_for(data.user(user_type="admin"))  # not in the service's auth cache yet
    with users_table_locked(engine):
        started = time.monotonic()
        message = probes().refused_with(token, transports=["websocket"])
        waited = time.monotonic() - started
    # Refused once the lookup hits DB_STATEMENT_TIMEOUT_MS (2 s), not left waiting forever.
    assert message == "Service unavailable; retry shortly"
    assert waited < 6
    assert probes().connect(token).sio.connected


def test_per_user_connection_limit(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    token = token_for(admin)
    sockets = [probes().connect(token, transports=["websocket"]) for _ in range(MAX_PER_USER)]
    assert probes().refused_with(token) == "Too many connections for this user"
    # Another admin is not affected.
    other = data.user(user_type="admin")
    assert probes().connect(token_for(other)).sio.connected
    # A closed socket frees its slot (the disconnect is handled asynchronously: retry briefly).
    sockets[0].close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert probes().connect(token, transports=["websocket"]).sio.connected
            break
        except socketio.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert probes().refused_with(token) == "Too many connections for this user"


def test_event_flood_is_rate_limited(probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    probe = probes().connect(token_for(admin), transports=["websocket"])
    probe.wait_for("job-stats")
    mark = probe.mark()
    for _ in range(100):
        probe.sio.emit("request:job-stats")
    probe.wait_for("error", lambda e: "Rate limit exceeded" in e["message"], since=mark, timeout=5)
    time.sleep(1.0)
    limited = probe.matching("error", lambda e: "Rate limit exceeded" in e["message"], since=mark)
    answered = probe.matching("job-stats", since=mark)
    # 10 events/s with a burst of 20: most of the 100 are refused, the burst is answered.
    assert len(limited) >= 60, (len(limited), len(answered))
    assert 20 <= len(answered) <= 40, (len(limited), len(answered))
    assert len(limited) + len(answered) == 100
    # The client is throttled, not dropped: after a pause it is answered again.
    assert probe.sio.connected
    assert "total" in probe.call("request:job-stats")["overview"]


# --- origins -------------------------------------------------------------------------------


def test_websocket_origin_check(live: RunningService, probes: Callable[..., Probe], data: Data, admin: dict[str, Any]) -> None:
    token = token_for(admin)
    # A page on another site must not open an admin socket with the admin's token.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        raw_socketio(live, token, origin="http://evil.example.com")
    assert refused.value.status_code == 400
    evil = probes(websocket_extra_options={"origin": "http://evil.example.com"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        evil.connect(token, transports=["websocket"])
    assert not evil.sio.connected
    # Nor over long-polling.
    polling = requests.get(f"{live.url}{PATH}/?EIO=4&transport=polling", headers={"Origin": "http://evil.example.com"}, timeout=5)
    assert polling.status_code == 400

    # The service's own origin (its dashboard page) and ALLOWED_ORIGINS are accepted.
    for origin in (live.url, "http://localhost:3000"):
        raw_socketio(live, token, origin=origin).close()
        probe = probes(websocket_extra_options={"origin": origin}).connect(token, transports=["websocket"])
        assert "overview" in probe.call("request:job-stats")


# --- many sockets --------------------------------------------------------------------------


def test_200_sockets_all_receive_a_broadcast(probes: Callable[..., Probe], data: Data) -> None:
    admins = [data.user(user_type="admin") for _ in range(200 // MAX_PER_USER)]
    tokens = [token_for(a) for a in admins for _ in range(MAX_PER_USER)]
    clients = [probes() for _ in tokens]

    def connect(pair: tuple[Probe, str]) -> None:
        probe, token = pair
        probe.connect(token, transports=["websocket"])
        assert probe.call("subscribe:jobs") == {"ok": True}

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(connect, zip(clients, tokens, strict=True)))
    connected_in = time.monotonic() - started
    assert all(c.sio.connected for c in clients)

    job = fresh_job(data)
    change_status(data, job, "completed")
    deadline = time.monotonic() + 15
    for probe in clients:
        probe.wait_for("job-update", is_job(job, "completed"), timeout=max(0.1, deadline - time.monotonic()))
    print(f"\n200 sockets connected and subscribed in {connected_in:.2f}s; all received the update")


def test_token_guessing_over_socketio_is_throttled(database_url: str, data: Data, admin: dict[str, Any], tmp_path: Path) -> None:
    accepted_before = token_for(admin)
    with run_service(database_url, tmp_path, workers=1, env={**ENV, "AUTH_FAILURE_LIMIT": "2 per minute"}) as service:
        kept = Probe(service.url).connect(accepted_before, transports=["websocket"])
        try:
            for _ in range(2):
                assert Probe(service.url).refused_with(token_for(admin)[:-4] + "AAAA") == "Invalid or expired token"
            # This address is over the limit: a new token is refused before any check, a valid one too...
            fresh = token_for(admin, ttl_seconds=3600)
            assert Probe(service.url).refused_with(fresh) == "Too many failed authentication attempts; retry later"
            # ...but an admin whose token was accepted before connects again.
            again = Probe(service.url).connect(accepted_before, transports=["websocket"])
            assert again.sio.connected
            again.close()
        finally:
            kept.close()
