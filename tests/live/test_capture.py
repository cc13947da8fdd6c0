"""Change capture: every committed change of archive.analysis_jobs reaches the event log once,
by polling or woken by the notify trigger, across late commits, large bursts, leader restarts
and a leader's death."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.archive_options import TRIGGER_NAME
from tests.support.event_log import logged_events
from tests.support.factories import Data
from tests.support.live import (
    ENV,
    LEADER,
    UPDATES_ONLY,
    Jobs,
    assert_no_duplicates,
    change_key,
    cli,
    for_job,
    latencies,
    summary,
    updates,
    wait_log,
    wait_until,
)
from tests.support.metrics import scrape
from tests.support.service import RunningService, run_service, worker_pids
from tests.support.sse_client import SSEClient, SSEEvent
from tests.support.tokens import token_for


def trigger_installed(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"), {"n": TRIGGER_NAME}).scalar())


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


def reported_modes(svc: RunningService) -> tuple[str, dict[str, float]]:
    """(the mode /health/ready gives, the admin_service_capture_mode samples by mode)."""
    ready = requests.get(f"{svc.url}/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    samples = scrape(svc.url)
    gauge = {dict(labels)["mode"]: v for (name, labels), v in samples.items() if name == "admin_service_capture_mode"}
    return ready.json()["data"]["capture"]["mode"], gauge


def test_capture_reports_its_mode(database_url: str, alone: Data, engine: Engine, tmp_path: Path) -> None:
    with run_service(database_url, tmp_path, env=ENV) as svc:
        assert reported_modes(svc) == ("poll", {"poll": 1, "notify-trigger": 0, "exact": 0})
        cli(database_url, "db", "install-notify-trigger")
        assert reported_modes(svc) == ("notify-trigger", {"poll": 0, "notify-trigger": 1, "exact": 0})
        cli(database_url, "db", "install-notify-trigger", "--drop")
        assert reported_modes(svc)[0] == "poll"


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


def test_a_job_that_closed_while_no_leader_ran_is_seen_by_the_next_one(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Created an hour ago: only the open set can tell that it changed (no created_at window).
    data = alone
    job = data.job(status="queued", created_at=datetime.now(UTC) - timedelta(hours=1))
    jobs = Jobs(engine)
    token = token_for(admin)
    with run_service(database_url, tmp_path, env=ENV) as first, SSEClient(first.url, token=token, params=UPDATES_ONLY) as c:
        wait_log(first, LEADER)
        jobs.set_status(job, "processing")
        c.wait_for(for_job(job, "updated"), 5, "the job starting")
    jobs.set_status(job, "completed")  # no service runs: nobody sees it now
    with run_service(database_url, tmp_path, env=ENV) as second:
        wait_log(second, LEADER)
        wait_until(
            lambda: (
                [kind for _, kind, job_id, _ in logged_events(engine, settings) if job_id == job["id"]]
                == ["updated", "completed"]
            ),
            10,
            "the completion, logged by the next leader",
        )


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


class RecordingCursor:
    """A cursor that records every statement it runs (with its parameters) on its connection."""

    def __init__(self, owner: RecordingConnection, cursor: Any) -> None:
        self._owner = owner
        self._cursor = cursor

    @property
    def connection(self) -> RecordingConnection:
        return self._owner  # the event log opens its plain cursors through it: recorded too

    def execute(self, query: str, params: Any = None) -> None:
        self._owner.statements.append((query, params))
        self._cursor.execute(query, params)

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class RecordingConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements: list[tuple[str, Any]] = []

    def cursor(self, *args: Any, **kwargs: Any) -> RecordingCursor:
        return RecordingCursor(self, self._conn.cursor(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_polling_pass_reads_the_jobs_table_through_indexes_only(
    database_url: str, alone: Data, engine: Engine, settings: Settings
) -> None:
    """At 1,000,000 jobs a pass that scans the table costs PostgreSQL ~100 ms, twice a second,
    with nobody watching: every statement of a pass must be served by an index the owner has."""
    from admin_service.live.capture import Capturer
    from admin_service.live.connection import connect
    from admin_service.live.log import EventLog

    with engine.begin() as conn:  # enough old rows that the planner scans whatever no index serves
        conn.execute(
            text(
                """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, completed_at, created_at, updated_at)
                   SELECT gen_random_uuid(), 'old-' || g, gen_random_uuid(),
                          CASE WHEN g <= 40 THEN 'queued' WHEN g <= 80 THEN 'processing' ELSE 'completed' END,
                          CASE WHEN g > 80 THEN now() - make_interval(mins => g) END,
                          now() - make_interval(mins => g + 5), now() - make_interval(mins => g)
                   FROM generate_series(1, 30000) AS g"""
            )
        )
        conn.execute(text("ANALYZE archive.analysis_jobs"))
        started, closed = conn.execute(
            text("SELECT id::text FROM archive.analysis_jobs WHERE job_id IN ('old-1', 'old-50') ORDER BY job_id")
        ).scalars()
    capturer = Capturer(settings, database_url, EventLog(settings.admin_schema))
    real = connect(settings, database_url, "test-capture-plans")
    capture = RecordingConnection(real)
    try:
        capturer.capture_once(capture)  # the first pass: nothing changed lately
        jobs = Jobs(engine)
        new = jobs.insert()
        jobs.set_status({"id": started}, "processing")
        jobs.set_status({"id": closed}, "completed")
        for _ in range(3):
            capturer.capture_once(capture)
        # The plan of each statement that read the jobs table, with the parameters it ran with.
        on_jobs = [(query, params) for query, params in capture.statements if "archive.analysis_jobs" in query]
        plans = []
        with real.cursor() as cur:
            for query, params in on_jobs:
                cur.execute("EXPLAIN " + query, params)
                plans.append("\n".join(row[0] for row in cur.fetchall()))
    finally:
        real.close()
    scans = [plan for plan in plans if "Seq Scan on analysis_jobs" in plan]
    assert not scans, f"{len(scans)} of {len(plans)} statements scan the jobs table, e.g.:\n{scans[0]}"
    assert len(plans) >= 4 * 2, "each pass read new jobs and the open ones"
    assert any("id = ANY" in query for query, _ in on_jobs), "jobs that left the open set were read by primary key"
    kinds = {(job, kind) for _, kind, job, _ in logged_events(engine, settings)}
    assert kinds == {(new["id"], "created"), (started, "updated"), (closed, "completed")}
