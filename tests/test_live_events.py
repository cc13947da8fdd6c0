"""Live job events end to end: the service under gunicorn+gevent on a real port, a real
PostgreSQL, and an EventSource-style client (tests/sse_client.py).

Changes are written straight into archive.analysis_jobs the way the platform's workers
write them (updated_at = now(), the transaction's start), then followed through capture,
the event log, the tail and the hub to the subscriber's socket.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.archive_options import TRIGGER_NAME, drop_notify_trigger_ddl, run_ddl
from tests.conftest import ROOT, TEST_SECRET, RunningService, run_service, self_signed_certificate, token_for
from tests.factories import Data
from tests.sse_client import SSEClient, SSEEvent, StreamEnded

# Small intervals so that everything happens within a second or two.
ENV = {
    "CAPTURE_POLL_MS": "100",
    "TAIL_POLL_MS": "200",
    "CAPTURE_OVERLAP_S": "3",
    "SSE_HEARTBEAT_S": "1",
    "JOB_STATS_INTERVAL_MS": "500",
    "ALERT_INTERVAL_S": "1",
}
JOB_UPDATE = "job-update"
UPDATES_ONLY = {"events": JOB_UPDATE}
LEADER = "capture leadership acquired"


# --- fixtures and helpers -------------------------------------------------------------------


def clean_event_log(engine: Engine, settings: Settings) -> None:
    # No RESTART IDENTITY: a running service's tail remembers the last id it published.
    schema = settings.admin_schema
    with engine.begin() as conn:
        conn.exec_driver_sql(f'TRUNCATE "{schema}".job_events, "{schema}".capture_state, "{schema}".alert_state')


def drop_trigger(engine: Engine, settings: Settings) -> None:
    run_ddl(engine, drop_notify_trigger_ddl(settings))


@pytest.fixture
def live(engine: Engine, data: Data, settings: Settings) -> Iterator[Data]:
    """Empty archive and event-log tables, and no notify trigger before and after."""
    clean_event_log(engine, settings)
    drop_trigger(engine, settings)
    yield data
    drop_trigger(engine, settings)


class SharedService:
    """One running service for the tests that need no settings of their own, started on
    first use and stopped for the tests that run their own instances (which need to be
    the only candidates for capture leadership)."""

    def __init__(self, database_url: str, directory: Path) -> None:
        self.database_url = database_url
        self.directory = directory
        self._stack: ExitStack | None = None
        self._running: RunningService | None = None

    def get(self) -> RunningService:
        if self._running is None:
            self._stack = ExitStack()
            self._running = self._stack.enter_context(run_service(self.database_url, self.directory, env=ENV))
        return self._running

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._running = None


@pytest.fixture(scope="module")
def shared(database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedService]:
    holder = SharedService(database_url, tmp_path_factory.mktemp("live"))
    yield holder
    holder.stop()


@pytest.fixture
def service(shared: SharedService, live: Data) -> RunningService:
    """The shared service (ENV settings), on clean tables."""
    return shared.get()


@pytest.fixture
def alone(shared: SharedService, live: Data) -> Data:
    """Clean tables and no other instance on the database: the test runs its own."""
    shared.stop()
    return live


class Jobs:
    """Job rows written as the platform writes them: timestamps from the database clock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.committed_at = 0.0  # time.monotonic() right after the last commit

    def insert(
        self,
        *,
        user_id: str | None = None,
        status: str = "queued",
        assessment_name: str = "AI-Driven Talent Mapping",
        error_message: str | None = None,
        conn: Any = None,
    ) -> dict[str, Any]:
        row = {
            "id": str(uuid.uuid4()),
            "job_id": f"live-{uuid.uuid4().hex[:12]}",
            "user_id": user_id or str(uuid.uuid4()),
            "status": status,
            "assessment_name": assessment_name,
            "error_message": error_message,
        }
        sql = text(
            "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, assessment_name, error_message, created_at, updated_at) "
            "VALUES (:id, :job_id, :user_id, :status, :assessment_name, :error_message, now(), now())"
        )
        if conn is not None:  # the caller's open transaction
            conn.execute(sql, row)
            return row
        with self.engine.begin() as own:
            own.execute(sql, row)
        self.committed_at = time.monotonic()
        return row

    def set_status(self, job: dict[str, Any], status: str, *, error_message: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """UPDATE archive.analysis_jobs SET status = :status, updated_at = now(),
                           error_message = COALESCE(:error_message, error_message),
                           processing_started_at = CASE WHEN :status = 'processing' THEN now() ELSE processing_started_at END,
                           completed_at = CASE WHEN :status IN ('completed', 'failed', 'cancelled') THEN now() ELSE completed_at END
                       WHERE id = :id"""
                ),
                {"status": status, "error_message": error_message, "id": job["id"]},
            )
        self.committed_at = time.monotonic()
        job["status"] = status


def for_job(job: dict[str, Any], kind: str | None = None) -> Callable[[SSEEvent], bool]:
    def match(event: SSEEvent) -> bool:
        return event.name == JOB_UPDATE and event.data["job"]["id"] == job["id"] and (kind is None or event.data["event"] == kind)

    return match


def updates(events: list[SSEEvent]) -> list[SSEEvent]:
    return [e for e in events if e.name == JOB_UPDATE]


def change_key(event: SSEEvent) -> tuple[str, datetime, str]:
    """One change of one job: (job id, updated_at, status)."""
    job = event.data["job"]
    return job["id"], datetime.fromisoformat(job["updated_at"]), job["status"]


def assert_no_duplicates(events: list[SSEEvent]) -> None:
    stored = [e for e in events if e.id is not None]
    ids = [e.int_id for e in stored]
    assert ids == sorted(set(ids)), f"event ids must strictly increase: {ids}"
    keys = [change_key(e) for e in updates(stored)]
    assert len(keys) == len(set(keys)), f"a change was delivered twice: {keys}"


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def wait_log(svc: RunningService, needle: str, timeout: float = 15, count: int = 1) -> None:
    wait_until(lambda: svc.log().count(needle) >= count, timeout, f"{needle!r} in the log of :{svc.port}")


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rest_row(svc: RunningService, token: str, job: dict[str, Any]) -> dict[str, Any]:
    """The job as GET /admin/jobs lists it."""
    response = requests.get(f"{svc.url}/admin/jobs", params={"search": job["job_id"]}, headers=auth_headers(token), timeout=5)
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["data"]["jobs"] if r["id"] == job["id"]]
    assert len(rows) == 1
    return rows[0]


def logged_events(engine: Engine, settings: Settings, after: int = 0) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f'SELECT id, kind, job_row_id::text, payload FROM "{settings.admin_schema}".job_events WHERE id > %(a)s ORDER BY id',
            {"a": after},
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def worker_pids(svc: RunningService) -> list[int]:
    """gunicorn's workers: the children of the master run_service started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == svc.process.pid:
            pids.append(int(entry))
    return pids


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": TEST_SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def trigger_installed(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"), {"n": TRIGGER_NAME}).scalar())


def latencies(client: SSEClient, jobs: Jobs, count: int, spread_s: float) -> list[float]:
    """Commit-to-client seconds for `count` inserts, spread at random over the poll phase."""
    found = []
    for _ in range(count):
        time.sleep(random.uniform(0, spread_s))
        job = jobs.insert()
        event = client.wait_for(for_job(job), 5, f"the event of {job['id']}")
        found.append(event.received_at - jobs.committed_at)
    return found


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"n={len(values)} p50={statistics.median(values) * 1000:.0f}ms p99={p99 * 1000:.0f}ms max={max(values) * 1000:.0f}ms"


# --- the test client itself -----------------------------------------------------------------


def test_sse_client_parses_by_the_whatwg_rules() -> None:
    """The test client itself, on a hand-written stream (CRLF/CR/LF, multi-line data, comments)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    body = (
        "\ufeff: hello\r\nretry: 1500\r\nretry: soon\n\n"
        'id: 7\revent: job-update\rdata: {"a":\rdata: 1}\r\r'
        "data:no-space\n\n"
        "id\nevent: x\n\n"
        "data: tail without blank line"
    ).encode()

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):  # tiny chunks split lines, CRLFs and UTF-8 anywhere
            piece = body[i : i + 7]
            conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            time.sleep(0.001)
        conn.sendall(b"0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with SSEClient(f"http://127.0.0.1:{server.getsockname()[1]}", "/") as client:
        first = client.next_event(5)
        second = client.next_event(5)
        with pytest.raises(StreamEnded):
            client.next_event(5)
    server.close()
    assert client.comments == ["hello"]
    assert client.retries == [1500]
    assert (first.name, first.id, first.raw, first.data, first.retry) == ("job-update", "7", '{"a":\n1}', {"a": 1}, 1500)
    assert (second.name, second.id, second.last_event_id) == ("message", None, "7")
    assert second.raw == "no-space"
    assert len(client.events) == 2, "an event without data, or without its blank line, is not dispatched"


# --- the event stream (the shared instance) -------------------------------------------------


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
        stats = requests.get(f"{service.url}/admin/jobs/stats", headers=auth_headers(token), timeout=5).json()["data"]
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


def test_a_late_committing_transaction_is_not_missed(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token_for(admin), params=UPDATES_ONLY) as client, engine.connect() as slow:
        with slow.begin() as transaction:
            late = jobs.insert(conn=slow)  # updated_at = now() = the transaction's start
            late_stamp = slow.execute(text("SELECT updated_at FROM archive.analysis_jobs WHERE id = :id"), late).scalar()
            others = []
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                others.append(jobs.insert())
                client.wait_for(for_job(others[-1]), 5, "an on-time job")
                time.sleep(0.2)
            with engine.connect() as conn:
                watermark = conn.exec_driver_sql(f'SELECT watermark FROM "{settings.admin_schema}".capture_state').scalar()
            assert watermark > late_stamp, "capture has moved past the late row's updated_at"
            transaction.commit()
        event = client.wait_for(for_job(late), 5, "the late job")
        assert event.data["event"] == "created"
        client.collect(1.0)
    assert_no_duplicates(client.events)
    assert sorted(e.data["job"]["id"] for e in updates(client.events)) == sorted(j["id"] for j in [late, *others])


def test_a_burst_larger_than_a_capture_batch_is_captured_whole(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    from admin_service.live.capture import BATCH

    burst = BATCH + 500
    token = token_for(admin)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        with engine.begin() as conn:  # one statement: every row has the same updated_at
            conn.execute(
                text(
                    """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, completed_at, created_at, updated_at)
                       SELECT gen_random_uuid(), 'bulk-' || g, gen_random_uuid(), 'completed', now(), now(), now()
                       FROM generate_series(1, :n) AS g"""
                ),
                {"n": burst},
            )
        got: list[SSEEvent] = []
        deadline = time.monotonic() + 40
        while len(got) < burst and time.monotonic() < deadline and not client.ended:
            got += updates(client.collect(0.5))
        assert len(got) == burst, f"{len(got)} of {burst} bulk changes delivered"
        marker = Jobs(engine).insert()
        client.wait_for(for_job(marker), 5, "a change after the burst")
        assert_no_duplicates(client.events)


# --- resuming -------------------------------------------------------------------------------


def test_resume_after_a_disconnect_with_last_event_id(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        a, b = jobs.insert(), jobs.insert()
        client.wait_for(for_job(b), 5)
        last = client.events[-1]
        assert last.last_event_id == last.id
    # Disconnected: three changes happen meanwhile.
    c = jobs.insert()
    jobs.set_status(a, "processing")
    jobs.set_status(b, "failed", error_message="lost")

    def three_logged() -> list[tuple[int, str, str | None, dict[str, Any]]] | None:
        rows = logged_events(engine, settings, last.int_id)
        return rows if len(rows) == 3 else None

    missed = wait_until(three_logged, 5, "the three changes in the log")
    assert [row[2] for row in missed] == [c["id"], a["id"], b["id"]]

    def resume(**kwargs: Any) -> SSEClient:
        client = SSEClient(service.url, token=token, **kwargs)
        assert client.status == 200
        got = [client.next_event(5) for _ in range(3)]
        assert [e.int_id for e in got] == [row[0] for row in missed], "exactly the missed events, in order"
        assert [e.data for e in got] == [row[3] for row in missed]
        assert [e.data["event"] for e in got] == ["created", "updated", "failed"]
        return client

    by_header = resume(params=UPDATES_ONLY, last_event_id=last.id)
    by_query = resume(params={**UPDATES_ONLY, "last_event_id": last.id})
    with by_header, by_query:
        d = jobs.insert()
        for client in (by_header, by_query):
            live_event = client.next_event(5)
            assert for_job(d)(live_event), "then live events"
            client.collect(1.0)
            assert_no_duplicates(client.events)
            assert len(client.events) == 4


def test_resume_from_a_pruned_id_gets_a_reset_event(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        for _ in range(3):
            client.wait_for(for_job(jobs.insert()), 5)
    first, second, third = (e.int_id for e in client.events)
    with engine.begin() as conn:  # as the hourly prune does, for events up to `second`
        conn.exec_driver_sql(f'DELETE FROM "{settings.admin_schema}".job_events WHERE id <= %(i)s', {"i": second})
        conn.exec_driver_sql(f'UPDATE "{settings.admin_schema}".capture_state SET pruned_through = %(i)s', {"i": second})

    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=first) as gap:
        reset = gap.next_event(5)
        assert reset.name == "reset"
        assert reset.id is None
        assert reset.data["lastEventId"] >= third
        job = jobs.insert()
        after = gap.next_event(5)
        assert for_job(job)(after), "no stale replay after a reset: live events follow"
    # Resuming from the newest pruned id itself loses nothing: a normal replay.
    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=second) as ok:
        assert ok.next_event(5).int_id == third


def test_resume_from_an_id_this_log_never_had_gets_a_reset_event(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    """A Last-Event-ID beyond the log (the log was recreated or restored, or the id came from
    another environment): without a reset the client would skip every event up to that id."""
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        newest = client.wait_for(for_job(jobs.insert()), 5).int_id
    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=newest + 1000) as ahead:
        reset = ahead.next_event(5)
        assert reset.name == "reset"
        job = jobs.insert()
        assert for_job(job)(ahead.next_event(5)), "live events follow the reset"


def test_an_expired_token_ends_the_stream_with_an_error_event(service: RunningService, live: Data, admin: dict[str, Any]) -> None:
    connected = time.monotonic()
    with SSEClient(service.url, token=token_for(admin, ttl_seconds=3)) as client:
        assert client.status == 200
        error = client.wait_for(lambda e: e.name == "error", 8, "the error event")
        took = time.monotonic() - connected
        assert error.data["code"] == "TOKEN_EXPIRED"
        assert 1.5 < took < 6, took
        assert client.wait_ended(3) == [], "nothing after the error: the stream ends"


# --- bad requests and auth ------------------------------------------------------------------


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


# --- the event log over REST ----------------------------------------------------------------


def test_a_jobs_timeline_lists_its_events_oldest_first(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        job, other = jobs.insert(), jobs.insert()
        client.wait_for(for_job(job), 5)
        jobs.set_status(job, "processing")
        client.wait_for(for_job(job, "updated"), 5)
        jobs.set_status(job, "completed")
        client.wait_for(for_job(job, "completed"), 5)
    streamed = [e for e in client.events if for_job(job)(e)]
    for ref in (job["id"], job["job_id"]):
        response = requests.get(f"{service.url}/admin/jobs/{ref}/events", headers=auth_headers(token), timeout=5)
        assert response.status_code == 200, response.text
        events = response.json()["data"]["events"]
        assert [e["kind"] for e in events] == ["created", "updated", "completed"]
        assert [e["id"] for e in events] == [e.int_id for e in streamed]
        assert [e["payload"] for e in events] == [e.data for e in streamed], "what subscribers received"
        assert {e["event"] for e in events} == {JOB_UPDATE}
        assert other["id"] not in json.dumps(events)
    missing = requests.get(f"{service.url}/admin/jobs/{uuid.uuid4()}/events", headers=auth_headers(token), timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert requests.get(f"{service.url}/admin/jobs/{job['id']}/events", timeout=5).status_code == 401


# --- instances of their own: capture paths, restarts, failover, shutdown, slow clients, alerts


def test_capture_by_polling_only(database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path) -> None:
    assert not trigger_installed(engine)
    jobs = Jobs(engine)
    with (
        run_service(database_url, tmp_path, env={**ENV, "CAPTURE_POLL_MS": "400"}) as svc,
        SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY) as client,
    ):
        polled = latencies(client, jobs, 10, 0.4)
    print(f"\ncommit-to-client latency, polling (CAPTURE_POLL_MS=400): {summary(polled)}")
    assert max(polled) < 3


def test_capture_woken_by_the_notify_trigger(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    # Capture polls only every 10 s here: quick delivery can only come from the trigger's NOTIFY.
    env = {**ENV, "CAPTURE_POLL_MS": "10000", "ALERT_INTERVAL_S": "60"}
    jobs = Jobs(engine)
    installed = cli(database_url, "db", "install-notify-trigger")
    assert "CREATE TRIGGER" in installed.stdout
    assert trigger_installed(engine)
    with (
        run_service(database_url, tmp_path, env=env) as svc,
        SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY) as client,
    ):
        wait_log(svc, LEADER)
        time.sleep(0.5)  # the leader's first pass is done and it LISTENs
        woken = latencies(client, jobs, 10, 0.2)
        dropped = cli(database_url, "db", "install-notify-trigger", "--drop")
        assert "DROP TRIGGER" in dropped.stdout
        assert not trigger_installed(engine)
        with engine.connect() as conn:
            assert not conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname = :n"), {"n": TRIGGER_NAME}).scalar()
    print(f"\ncommit-to-client latency, notify trigger (CAPTURE_POLL_MS=10000): {summary(woken)}")
    assert max(woken) < 3


class Writer(threading.Thread):
    """Keeps changing jobs (create, processing, completed) until stopped."""

    def __init__(self, jobs: Jobs) -> None:
        super().__init__(daemon=True)
        self.jobs = jobs
        self.halt = threading.Event()
        self.written: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                job = self.jobs.insert()
                self.written.append(job)
                for status in ("processing", "completed"):
                    if self.halt.wait(0.05):
                        return
                    self.jobs.set_status(job, status)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        assert self.error is None, self.error


def final_changes(engine: Engine, jobs: list[dict[str, Any]]) -> set[tuple[str, datetime, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id::text, updated_at, status FROM archive.analysis_jobs WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [j["id"] for j in jobs]},
        ).all()
    return {(r[0], r[1], r[2]) for r in rows}


def test_no_duplicates_when_the_capture_leader_restarts(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    token = token_for(admin)
    writer = Writer(Jobs(engine))
    seen: list[SSEEvent] = []
    try:
        with run_service(database_url, tmp_path, env=ENV) as first:
            with SSEClient(first.url, token=token, params=UPDATES_ONLY) as client:
                wait_log(first, LEADER)
                writer.start()
                seen += client.collect(2.0)
        assert updates(seen), "the first instance delivered changes"
        # The first instance is gone, the writer goes on; a new one takes over the same database.
        with run_service(database_url, tmp_path, env=ENV) as second:
            with SSEClient(second.url, token=token, params=UPDATES_ONLY, last_event_id=seen[-1].id) as client:
                wait_log(second, LEADER)
                time.sleep(1.0)
                writer.stop()
                expected = final_changes(engine, writer.written)
                client.wait_for(
                    lambda _: expected <= {change_key(e) for e in seen + client.events}, 10, "every job's final state"
                )
                client.collect(1.0)  # anything re-emitted would come now
                seen += client.events
    finally:
        writer.halt.set()
    assert_no_duplicates(seen)
    # ...and in the log itself: one event per (job, updated_at, status).
    with engine.connect() as conn:
        twice = conn.exec_driver_sql(
            f"""SELECT job_row_id, payload->'job'->>'updated_at', status, count(*) FROM "{settings.admin_schema}".job_events
                WHERE event = 'job-update' GROUP BY 1, 2, 3 HAVING count(*) > 1"""
        ).all()
    assert twice == []
    logged = [row[0] for row in logged_events(engine, settings) if row[2] is not None]
    assert [e.int_id for e in updates(seen)] == logged, "every logged change reached the client, across the restart"


def test_two_instances_deliver_the_same_ids_and_a_client_can_move(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with (
        run_service(database_url, tmp_path, env=ENV) as a,
        run_service(database_url, tmp_path, env=ENV) as b,
        SSEClient(b.url, token=token, params=UPDATES_ONLY) as on_b,
    ):
        with SSEClient(a.url, token=token, params=UPDATES_ONLY) as on_a:
            first = jobs.insert()
            got_a = on_a.wait_for(for_job(first), 5)
            got_b = on_b.wait_for(for_job(first), 5)
            assert (got_a.id, got_a.data) == (got_b.id, got_b.data), "the same change is the same event everywhere"
            last_on_a = got_a.id
        # The client leaves A; three changes; it comes back on B with its Last-Event-ID.
        moved = [jobs.insert(), jobs.insert()]
        jobs.set_status(first, "completed")
        expected = [on_b.wait_for(for_job(moved[0]), 5), on_b.wait_for(for_job(moved[1]), 5), on_b.wait_for(for_job(first), 5)]
        with SSEClient(b.url, token=token, params=UPDATES_ONLY, last_event_id=last_on_a) as resumed:
            got = [resumed.next_event(5) for _ in expected]
            assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected]
            later = jobs.insert()
            assert for_job(later)(resumed.next_event(5))
            resumed.collect(0.5)
            assert_no_duplicates(resumed.events)
    assert a.log().count(LEADER) + b.log().count(LEADER) == 1, "one capture leader for both"


def hard_kill(svc: RunningService) -> None:
    """SIGKILL the master first (so it cannot fork a replacement), then its workers."""
    workers = worker_pids(svc)
    os.kill(svc.process.pid, signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    svc.process.wait(5)


def test_failover_when_the_capture_leader_dies(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with run_service(database_url, tmp_path, env=ENV) as a:
        wait_log(a, LEADER)
        with run_service(database_url, tmp_path, env=ENV) as b, SSEClient(b.url, token=token, params=UPDATES_ONLY) as on_b:
            before = jobs.insert()
            on_b.wait_for(for_job(before), 5)
            assert LEADER not in b.log()
            hard_kill(a)
            killed = time.monotonic()
            job = jobs.insert()
            event = on_b.wait_for(for_job(job), 10, "the change after the leader died")
            print(f"\nfailover: leader SIGKILLed -> change on the new leader's subscriber in {event.received_at - killed:.2f}s")
            assert LEADER in b.log()
            assert event.data["event"] == "created"
            assert_no_duplicates(on_b.events)


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


def server_side_state(server_port: int, client_port: int) -> str | None:
    """The TCP state (hex, as /proc/net/tcp shows it) of the server's end of one connection."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return state
    return None


ESTABLISHED = "01"


def test_a_stalled_subscriber_is_dropped_and_others_get_everything(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    # ~6 MB of events: more than the kernel buffers for the stalled connection (the server's
    # send buffer grows to 4 MB here), so its writes block and its queue of 5 fills.
    bursts, per_burst, size = 16, 50, 8000
    count = bursts * per_burst
    with run_service(database_url, tmp_path, env={**ENV, "SUBSCRIBER_QUEUE_MAX": "5"}) as svc:
        workers = worker_pids(svc)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a tiny window
        stalled.connect(("127.0.0.1", svc.port))
        stalled.sendall(
            f"GET /admin/jobs/stream?events=job-update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        with SSEClient(svc.url, token=token, params=UPDATES_ONLY) as reader:
            time.sleep(0.5)  # both subscribed

            def write() -> None:  # large events, in bursts: one capture pass and one publish round each
                with engine.connect() as conn:
                    for burst in range(bursts):
                        conn.execute(
                            text(
                                """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, error_message, created_at, updated_at)
                                   SELECT gen_random_uuid(), 'big-' || :b || '-' || g, gen_random_uuid(), 'failed', repeat('x', :size),
                                          now(), now()
                                   FROM generate_series(1, :n) AS g"""
                            ),
                            {"b": burst, "size": size, "n": per_burst},
                        )
                        conn.commit()
                        time.sleep(0.05)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()  # while this thread reads, as a live client does
            got: list[SSEEvent] = []
            deadline = time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline and not reader.ended:
                got += updates(reader.collect(0.5))
            writer.join(10)
            assert len(got) == count, "the reading subscriber receives every event"
            assert_no_duplicates(got)
            assert not [e for e in reader.events if e.name == "error"]

            # The stalled one was dropped, and the server closed its end of the connection...
            client_port = stalled.getsockname()[1]
            wait_until(
                lambda: server_side_state(svc.port, client_port) != ESTABLISHED,
                10,
                "the server to close the stalled connection",
                every=0.2,
            )
            assert svc.log().count("dropped a slow subscriber") == 1
            # ...so what the stalled client finds, once it reads, ends short of the whole stream.
            stalled.settimeout(10)
            received = b""
            while chunk := stalled.recv(1 << 20):
                received += chunk
            assert 0 < received.count(b"event: job-update") < count
            # The worker stayed healthy: the same process, answering at once, without errors.
            started = time.monotonic()
            assert requests.get(f"{svc.url}/health", timeout=2).status_code == 200
            assert time.monotonic() - started < 1
            assert worker_pids(svc) == workers
            assert "[ERROR]" not in svc.log()
        stalled.close()


def test_alerts_are_streamed_and_listed(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with (
        run_service(database_url, tmp_path, env={**ENV, "ALERT_QUEUE_MAX": "2"}) as svc,
        SSEClient(svc.url, token=token, params={"events": "job-alert"}) as client,
    ):
        for _ in range(3):
            jobs.insert()
        alert = client.wait_for(lambda e: e.name == "job-alert", 8, "the queue_overflow alert")
        assert alert.data["type"] == "queue_overflow"
        assert alert.data["severity"] in ("low", "medium", "high", "critical")
        assert alert.data["data"]["queued"] == 3
        assert alert.id is not None
        assert client.collect(2.5) == [], "raised once per episode, not on every evaluation"

        for params in ({}, {"type": "queue_overflow"}):
            response = requests.get(f"{svc.url}/admin/jobs/alerts", params=params, headers=auth_headers(token), timeout=5)
            assert response.status_code == 200, response.text
            listed = response.json()["data"]["events"]
            assert [(e["id"], e["kind"], e["payload"]) for e in listed] == [(alert.int_id, "queue_overflow", alert.data)]
        other = requests.get(
            f"{svc.url}/admin/jobs/alerts", params={"type": "processing_timeout"}, headers=auth_headers(token), timeout=5
        )
        assert other.json()["data"]["events"] == []
        bad = requests.get(f"{svc.url}/admin/jobs/alerts", params={"type": "bogus"}, headers=auth_headers(token), timeout=5)
        assert bad.status_code == 400
