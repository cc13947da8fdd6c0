"""The SSE endpoint (/admin/jobs/stream) end to end: the service under gunicorn+gevent on a real
port, a real PostgreSQL, and an EventSource-style client (tests/support/sse_client.py).

Changes are written straight into archive.analysis_jobs the way the platform's workers
write them (updated_at = now(), the transaction's start), then followed through capture,
the event log, the tail and the hub to the subscriber's socket.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from tests.support.factories import Data
from tests.support.live import (
    ENV,
    JOB_UPDATE,
    LEADER,
    UPDATES_ONLY,
    Jobs,
    assert_no_duplicates,
    for_job,
    rest_row,
    updates,
    wait_log,
    wait_until,
)
from tests.support.metrics import scrape, value
from tests.support.service import RunningService, run_service, self_signed_certificate
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for


def test_job_changes_reach_a_subscriber_as_job_update_events(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    connected = time.monotonic()
    with SSEClient(service.url, token=token) as client, SSEClient(service.url, token=token, params=UPDATES_ONLY) as quiet:
        assert client.status == 200
        assert client.content_type.startswith("text/event-stream")
        assert "no-cache" in client.headers["cache-control"]

        first = client.next_event(5)
        assert first.name == "job-stats", "job-stats comes right at connect"
        assert first.received_at - connected < 2
        assert first.retry == 3000, "retry: comes before the first event"
        assert first.id is None, "job-stats is not stored: no id to resume from"
        stats = requests.get(f"{service.url}/admin/jobs/stats", headers=bearer(token), timeout=5).json()["data"]
        assert first.data["overview"] == stats["overview"]

        job = jobs.insert(user_id=admin["id"])
        created = client.wait_for(for_job(job), 5, "created")
        assert set(created.data) == {"event", "job", "timestamp"}
        assert created.data["event"] == "created"
        assert created.data["job"] == rest_row(service, token, job), "the job as REST shows it"
        assert created.data["job"]["user"]["email"] == admin["email"]
        assert created.data["timestamp"] == created.data["job"]["updated_at"]

        jobs.set_status(job, "completed")
        completed = client.wait_for(for_job(job), 5, "completed")
        assert completed.data["event"] == "completed"
        assert completed.data["job"]["status"] == "completed"
        assert completed.data["job"]["completed_at"] is not None
        assert completed.data["job"] == rest_row(service, token, job)

        other = jobs.insert()
        other_created = client.wait_for(for_job(other), 5, "created")
        assert other_created.data["event"] == "created"
        jobs.set_status(other, "failed", error_message="scoring service unavailable")
        failed = client.wait_for(for_job(other), 5, "failed")
        assert failed.data["event"] == "failed"
        assert failed.data["job"]["error_message"] == "scoring service unavailable"

        stored = [created, completed, other_created, failed]
        assert all(e.id is not None and e.id.isdigit() for e in stored), "stored events carry id:"
        assert_no_duplicates(client.events)
        # Stats follow the changes, once per JOB_STATS_INTERVAL_MS.
        client.wait_for(
            lambda e: e.name == "job-stats" and e.data["overview"]["completed"] == 1 and e.data["overview"]["failed"] == 1,
            3,
            "job-stats with the new counts",
        )

        # Nothing but job-update on the filtered stream, so it idles: heartbeats keep it alive.
        got = quiet.collect(2.5)
        assert [e.id for e in got] == [e.id for e in stored], "the same events, same ids, in order"
        assert not [e for e in quiet.events if e.name == "job-stats"]
        assert len(quiet.heartbeats) >= 2, quiet.comments


def test_heartbeats_only_on_a_stream_that_is_otherwise_silent(service: RunningService, admin: dict[str, Any]) -> None:
    """Events keep a stream alive themselves (and find a dead client): a heartbeat goes only after
    SSE_HEARTBEAT_S of silence, not beside them on every stream (with ten thousand open, that was
    ten thousand more writes every interval inside the event fan-outs)."""
    token = token_for(admin)
    beat = float(ENV["SSE_HEARTBEAT_S"])
    with (
        SSEClient(service.url, token=token, params={"events": "job-stats"}) as busy,
        SSEClient(service.url, token=token, params={"events": "job-alert"}) as quiet,
    ):
        got = busy.collect(3 * beat)
        quiet.collect(0.1)
    assert len([e for e in got if e.name == "job-stats"]) >= 3, "job-stats twice a second (JOB_STATS_INTERVAL_MS)"
    assert busy.heartbeats == [], busy.comments
    assert len(quiet.heartbeats) >= 2, quiet.comments


def test_an_http10_client_gets_the_stream_unchunked(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    # Under gunicorn an HTTP/1.1 stream is written by the publisher in chunked coding; an
    # HTTP/1.0 client cannot take chunks and is served the plain body, event by event.
    token = token_for(admin)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as raw:
        raw.sendall(f"GET /admin/jobs/stream?events=job-update HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += raw.recv(65536)
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert b"chunked" not in head.lower()
        job = Jobs(engine).insert()
        deadline = time.monotonic() + 5
        while job["id"].encode() not in body:
            assert time.monotonic() < deadline, f"no event for the job within 5 s: {body[-300:]!r}"
            body += raw.recv(65536)
        event = body[body.rindex(b"id: ", 0, body.index(job["id"].encode())) :]
        assert event.startswith(b"id: ") and b"\nevent: job-update\ndata: {" in event
        assert b"\r\n" not in body, "no chunk framing in an HTTP/1.0 body"


def test_a_stream_over_gunicorns_own_tls(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    # gunicorn serving HTTPS itself: the stream's bytes must go through TLS (the publisher's
    # direct socket writes would bypass it and corrupt the connection).
    cert, key = self_signed_certificate(tmp_path)
    with run_service(database_url, tmp_path, env=ENV, tls=(cert, key)) as svc:
        wait_log(svc, LEADER)
        trusted = ssl.create_default_context(cafile=str(cert))
        with SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY, tls=trusted) as client:
            assert client.status == 200
            jobs = Jobs(engine)
            first, second = jobs.insert(), jobs.insert()
            assert client.wait_for(for_job(first), 5, "the first change").data["event"] == "created"
            assert client.wait_for(for_job(second), 5, "the second change").data["event"] == "created"
            client.collect(1.5)  # heartbeats go over TLS too
            assert client.heartbeats and not client.ended
            assert_no_duplicates(client.events)


def test_filters_choose_what_a_subscriber_receives(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    streams = {
        "status": {"status": "completed"},
        "statuses": {"status": "failed,queue"},  # `queue` is the old spelling of queued
        "assessment": {"assessment_name": "talent MAP"},
        "user": {"user_id": bob},
        "updates": UPDATES_ONLY,
        "stats": {"events": "job-stats"},
    }
    clients = {name: SSEClient(service.url, token=token, params=params) for name, params in streams.items()}
    try:
        # Capture reads row states: wait for each change, or two quick ones would fold into one.
        mapping = jobs.insert(user_id=alice, assessment_name="AI-Driven Talent Mapping")
        clients["updates"].wait_for(for_job(mapping), 5)
        iq = jobs.insert(user_id=bob, assessment_name="AI-Based IQ Test")
        clients["updates"].wait_for(for_job(iq), 5)
        jobs.set_status(mapping, "completed")
        clients["updates"].wait_for(for_job(mapping, "completed"), 5)
        jobs.set_status(iq, "failed", error_message="timeout")
        clients["updates"].wait_for(for_job(iq, "failed"), 5)
        time.sleep(1.5)  # every stream has had the time to send everything (and stats ticks)
        for client in clients.values():
            client.collect(0.3)
        got = {name: [(e.data["job"]["id"], e.data["event"]) for e in updates(c.events)] for name, c in clients.items()}
    finally:
        for client in clients.values():
            client.close()

    m, i = mapping["id"], iq["id"]
    assert got["status"] == [(m, "completed")]
    assert got["statuses"] == [(m, "created"), (i, "created"), (i, "failed")]
    assert got["assessment"] == [(m, "created"), (m, "completed")]
    assert got["user"] == [(i, "created"), (i, "failed")]
    assert got["updates"] == [(m, "created"), (i, "created"), (m, "completed"), (i, "failed")]
    assert not [e for e in clients["updates"].events if e.name != JOB_UPDATE], "events=job-update: no job-stats"
    assert got["stats"] == []
    assert {e.name for e in clients["stats"].events} == {"job-stats"}
    assert len(clients["stats"].events) >= 3, "job-stats every JOB_STATS_INTERVAL_MS"


def test_an_expired_token_ends_the_stream_with_an_error_event(service: RunningService, live: Data, admin: dict[str, Any]) -> None:
    connected = time.monotonic()
    with SSEClient(service.url, token=token_for(admin, ttl_seconds=3)) as client:
        assert client.status == 200
        error = client.wait_for(lambda e: e.name == "error", 8, "the error event")
        took = time.monotonic() - connected
        assert error.data["code"] == "TOKEN_EXPIRED"
        assert 1.5 < took < 6, took
        assert client.wait_ended(3) == [], "nothing after the error: the stream ends"


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"events": "bogus"}, {}, "events"),
        ({"events": "job-update,bogus"}, {}, "events"),
        ({"status": "bogus"}, {}, "status"),
        ({"user_id": "not-a-uuid"}, {}, "user_id"),
        ({"last_event_id": "-1"}, {}, "last_event_id"),
        ({"last_event_id": "abc"}, {}, "last_event_id"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        # Digits to str.isdigit() that int() refuses, and more digits than int() reads: were 500s.
        ({}, {"Last-Event-ID": "\xb2"}, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "9" * 5000}, "Last-Event-ID"),
        ({"last_event_id": "9" * 5000}, {}, "last_event_id"),
        ({"last_event_id": str(2**63)}, {}, "last_event_id"),
        ({"last_event_id": "\xb2"}, {}, "last_event_id"),
        ({"colour": "blue"}, {}, "colour"),
    ],
)
def test_bad_input_is_a_400_before_any_stream(
    service: RunningService, live: Data, admin: dict[str, Any], params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    with SSEClient(service.url, token=token_for(admin), params=params, headers=headers) as client:
        assert client.status == 400
        assert client.content_type.startswith("application/json")
        body = client.json_body()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert field in [d["field"] for d in body["error"]["details"]], body


def test_stream_needs_an_admin_token_and_takes_it_from_the_query(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    with SSEClient(service.url) as anonymous:
        assert anonymous.status == 401
        assert anonymous.json_body()["error"]["code"] == "UNAUTHORIZED"
    with SSEClient(service.url, params={"access_token": "not.a.token"}) as bad:
        assert bad.status == 401
    user = live.user()
    with SSEClient(service.url, token=token_for(user)) as not_admin:
        assert not_admin.status == 403

    token = token_for(admin)
    with SSEClient(service.url, params={"access_token": token, **UPDATES_ONLY}) as client:
        assert client.status == 200
        job = Jobs(engine).insert()
        client.wait_for(for_job(job), 5)
    time.sleep(0.3)  # the access line is written when the stream ends
    log = service.log()
    assert "/admin/jobs/stream" in log
    assert token not in log
    assert token.split(".")[2] not in log, "not even the signature"


def test_sigterm_ends_streams_promptly_and_another_instance_takes_over(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    env = {**ENV, "GRACEFUL_TIMEOUT": "20"}
    with run_service(database_url, tmp_path, env=env) as a:
        wait_log(a, LEADER)
        with (
            run_service(database_url, tmp_path, env=env) as b,
            SSEClient(a.url, token=token, params=UPDATES_ONLY) as on_a,
            SSEClient(b.url, token=token, params=UPDATES_ONLY) as on_b,
        ):
            job = jobs.insert()
            on_a.wait_for(for_job(job), 5)
            sent = time.monotonic()
            a.process.send_signal(signal.SIGTERM)
            on_a.wait_ended(5)
            ended = time.monotonic() - sent
            assert ended < 3, f"the stream ended {ended:.1f}s after SIGTERM (GRACEFUL_TIMEOUT is 20)"
            assert on_a.retries[0] == 3000 and len(on_a.retries) == 2 and on_a.retries[-1] <= 1000, on_a.retries
            assert any("shutting down" in c for c in on_a.comments)
            a.process.wait(10)
            print(f"\nSIGTERM: stream ended after {ended:.2f}s, instance exited after {time.monotonic() - sent:.2f}s")
            assert "graceful timeout" not in a.log().lower()

            wait_log(b, LEADER, 10)
            after = jobs.insert()
            on_b.wait_for(for_job(after), 5, "a change captured by the new leader")
            assert_no_duplicates(on_b.events)


def test_head_of_the_stream_leaves_no_subscriber_behind(service: RunningService, live: Data, admin: dict[str, Any]) -> None:
    """A HEAD answer is closed before its body starts: the stream's subscription must go with it
    (it leaked one per request, and each then queued every published event until dropped).
    Counted by the workers' hub gauge, sampled every JOB_STATS_INTERVAL_MS (500 ms here)."""
    headers = bearer(token_for(admin))
    time.sleep(1.2)
    before = value(scrape(service.url), "admin_service_live_subscribers")
    for _ in range(20):
        response = requests.head(f"{service.url}/admin/jobs/stream", headers=headers, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
    # At least two samples after the requests; then waited for, as a loaded machine may sample
    # late (a leak never goes away, so it still fails).
    time.sleep(1.2)
    wait_until(
        lambda: value(scrape(service.url), "admin_service_live_subscribers") <= before,
        10,
        "the HEAD requests' subscribers to be gone",
        every=0.5,
    )
