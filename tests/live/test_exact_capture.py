"""Exact capture (db install-change-capture): every committed transition of a job is logged
once, in the order its writers made them, however fast they come, whatever commits late, and
across the death of the capture leader."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.live.changes import BATCH
from tests.support.event_log import logged_events, reset_event_log
from tests.support.factories import Data
from tests.support.live import (
    ENV,
    EXACT_MODE,
    LEADER,
    UPDATES_ONLY,
    Jobs,
    assert_no_duplicates,
    cli,
    drop_trigger,
    for_job,
    install_change_capture,
    latencies,
    summary,
    updates,
    wait_log,
    wait_until,
)
from tests.support.postgres import PrivateServer
from tests.support.service import RunningService, run_service
from tests.support.settings import make_settings
from tests.support.sse_client import SSEClient
from tests.support.tokens import token_for

# No timer wakes the leader within a test (capture and alert passes 60 s apart): every delivery
# must come from a NOTIFY or from the leader seeing a change before it sleeps.
NO_TIMER = {**ENV, "CAPTURE_POLL_MS": "60000", "ALERT_INTERVAL_S": "60"}


@contextmanager
def exact_service(database_url: str, tmp_path: Path, engine: Engine, settings: Settings) -> Iterator[RunningService]:
    """One instance, the change-capture trigger installed before it starts: it leads in exact mode."""
    install_change_capture(engine, settings)
    with run_service(database_url, tmp_path, env=NO_TIMER) as svc:
        wait_log(svc, EXACT_MODE)
        yield svc


def job_updates(engine: Engine, settings: Settings, job_id: str) -> list[tuple[str, str]]:
    """(kind, status) of each job-update the log holds for the job, in log order."""
    return [(kind, payload["job"]["status"]) for _, kind, job, payload in logged_events(engine, settings) if job == job_id]


def pending_changes(engine: Engine, settings: Settings) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{settings.admin_schema}".job_changes').scalar() or 0)


def test_install_prints_its_ddl_and_drop_removes_it(database_url: str, live: Data, engine: Engine) -> None:
    installed = cli(database_url, "db", "install-change-capture")
    assert "CREATE TRIGGER admin_service_record_job_update" in installed.stdout
    assert "SECURITY DEFINER" in installed.stdout
    with engine.connect() as conn:
        names = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'archive.analysis_jobs'::regclass")).scalars()
        assert {"admin_service_record_job_insert_delete", "admin_service_record_job_update", "admin_service_wake_capture"} <= set(
            names
        )
    dropped = cli(database_url, "db", "install-change-capture", "--drop")
    assert "DROP TRIGGER IF EXISTS admin_service_record_job_update" in dropped.stdout
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'admin_service_%'")).scalar()
    assert left == 0


def test_capture_follows_an_install_and_a_drop_without_losing_or_repeating_a_state(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    jobs = Jobs(engine)

    def logged(job: dict[str, Any], count: int = 1) -> bool:
        return len(job_updates(engine, settings, job["id"])) >= count

    with run_service(database_url, tmp_path, env=ENV) as svc:
        wait_log(svc, "capture mode: poll")
        before = jobs.insert()
        wait_until(lambda: logged(before), 10, "a change while polling")
        install_change_capture(engine, settings)
        handed_over = jobs.insert()  # polled or recorded, whichever comes first: logged once
        wait_log(svc, EXACT_MODE, timeout=15)
        exact = jobs.insert()
        jobs.set_status(exact, "processing")
        jobs.set_status(exact, "completed")
        wait_until(lambda: logged(exact, 3), 10, "every transition once exact")
        drop_trigger(engine, settings)
        wait_log(svc, "capture mode: poll", timeout=15, count=2)
        after = jobs.insert()
        wait_until(lambda: logged(after), 10, "a change after the drop")
        time.sleep(float(ENV["CAPTURE_OVERLAP_S"]) + 1)  # polling re-reads its overlap window meanwhile
    assert job_updates(engine, settings, exact["id"]) == [
        ("created", "queued"),
        ("updated", "processing"),
        ("completed", "completed"),
    ]
    for job in (before, handed_over, after):
        assert job_updates(engine, settings, job["id"]) == [("created", "queued")]
    assert pending_changes(engine, settings) == 0


def reported_mode(svc: RunningService) -> str:
    ready = requests.get(f"{svc.url}/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    return str(ready.json()["data"]["capture"]["mode"])


def test_once_ready_says_exact_after_an_install_every_transition_is_logged(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """/health/ready says `exact` when the leader captures exactly, not as soon as the triggers
    exist: a leader still sampling rows (polling every 100 ms here) would merge a job's quick
    transitions into its last state, and the switch's hand-over then skips the merged ones. The
    install's NOTIFY switches the leader at once (its own look at the mode is a minute apart here)."""
    jobs = Jobs(engine)
    with run_service(database_url, tmp_path, env={**ENV, "CAPTURE_MODE_CHECK_S": "60"}) as svc:
        wait_log(svc, "capture mode: poll")
        assert reported_mode(svc) == "poll"
        install_change_capture(engine, settings)
        wait_until(lambda: reported_mode(svc) == "exact", 15, "/health/ready saying exact", every=0.02)
        job = jobs.insert()
        jobs.set_status(job, "processing")
        jobs.set_status(job, "completed")
        wait_until(lambda: len(job_updates(engine, settings, job["id"])) >= 3, 10, "every transition logged")
        time.sleep(0.5)  # a merged or repeated state would be logged by now
    assert job_updates(engine, settings, job["id"]) == [
        ("created", "queued"),
        ("updated", "processing"),
        ("completed", "completed"),
    ]


def test_exact_capture_is_woken_by_its_notify(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Capture polls only every 10 s here: quick delivery can only come from the change trigger's NOTIFY.
    install_change_capture(engine, settings)
    env = {**ENV, "CAPTURE_POLL_MS": "10000", "ALERT_INTERVAL_S": "60"}
    with (
        run_service(database_url, tmp_path, env=env) as svc,
        SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY) as client,
    ):
        wait_log(svc, EXACT_MODE)
        time.sleep(0.5)  # the leader's first pass is done and it LISTENs
        woken = latencies(client, Jobs(engine), 10, 0.2)
    print(f"\ncommit-to-client latency, exact capture (CAPTURE_POLL_MS=10000): {summary(woken)}")
    assert max(woken) < 3


def test_a_fast_sequence_yields_every_transition_in_order(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    jobs = Jobs(engine)
    with (
        exact_service(database_url, tmp_path, engine, settings) as svc,
        SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY) as client,
    ):
        started = time.monotonic()
        written = []
        for _ in range(5):  # queued -> processing -> completed, each its own transaction, no pause
            job = jobs.insert()
            jobs.set_status(job, "processing")
            jobs.set_status(job, "completed")
            written.append(job)
        assert time.monotonic() - started < 5
        for job in written:
            client.wait_for(for_job(job, "completed"), 5, f"the completion of {job['id']}")
        client.collect(0.5)
    for job in written:
        got = [(e.data["event"], e.data["job"]["status"]) for e in updates(client.events) if e.data["job"]["id"] == job["id"]]
        assert got == [("created", "queued"), ("updated", "processing"), ("completed", "completed")]
        assert job_updates(engine, settings, job["id"]) == got
    assert_no_duplicates(client.events)
    assert pending_changes(engine, settings) == 0, "the consumed changes are deleted"


def test_every_change_inside_one_transaction_is_logged(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """A job touched several times in one transaction (updated_at = now() each time, a status
    that comes back): each change is its own event; an UPDATE that changes nothing is none."""
    jobs = Jobs(engine)
    with exact_service(database_url, tmp_path, engine, settings):
        with engine.begin() as conn:
            job = jobs.insert(conn=conn)
            for sql in (
                "UPDATE archive.analysis_jobs SET status = 'processing', updated_at = now() WHERE id = :id",
                "UPDATE archive.analysis_jobs SET retry_count = retry_count + 1, updated_at = now() WHERE id = :id",
                "UPDATE archive.analysis_jobs SET status = 'queued', updated_at = now() WHERE id = :id",
                "UPDATE archive.analysis_jobs SET updated_at = updated_at WHERE id = :id",  # no change
                "UPDATE archive.analysis_jobs SET status = 'processing', updated_at = now() WHERE id = :id",
            ):
                conn.execute(text(sql), job)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM archive.analysis_jobs WHERE id = :id"), job)
        wait_until(lambda: len(job_updates(engine, settings, job["id"])) >= 6, 10, "six events of the job")
        time.sleep(0.5)
    assert job_updates(engine, settings, job["id"]) == [
        ("created", "queued"),
        ("updated", "processing"),
        ("updated", "processing"),
        ("updated", "queued"),
        ("updated", "processing"),
        ("deleted", "processing"),
    ]


def test_a_rolled_back_transaction_yields_nothing_and_a_late_commit_is_not_skipped(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    jobs = Jobs(engine)
    with (
        exact_service(database_url, tmp_path, engine, settings) as svc,
        SSEClient(svc.url, token=token_for(admin), params=UPDATES_ONLY) as client,
        engine.connect() as slow,
    ):
        # Inserted once the leader captures exactly: inserted before, the hand-over pass would
        # sample it only if the service started within CAPTURE_OVERLAP_S of the insert, which a
        # loaded machine does not promise (test_capture_follows_an_install_and_a_drop_... covers the hand-over).
        early = jobs.insert()
        with engine.connect() as doomed, doomed.begin() as rolled_back:
            ghost = jobs.insert(conn=doomed)
            doomed.execute(text("UPDATE archive.analysis_jobs SET status = 'failed' WHERE id = :id"), early)
            rolled_back.rollback()
        late_tx = slow.begin()
        jobs.set_status(early, "processing", conn=slow)  # started first, committed last
        on_time = []
        until = time.monotonic() + 2.0
        while time.monotonic() < until:  # later transactions commit (and are delivered) meanwhile
            on_time.append(jobs.insert())
            client.wait_for(for_job(on_time[-1]), 10, "a job committed while an older transaction is open")
            time.sleep(0.2)
        late_tx.commit()
        event = client.wait_for(for_job(early), 10, "the late transaction's change")
        assert event.data["job"]["status"] == "processing"
        client.collect(1.0)
    assert not [e for e in updates(client.events) if e.data["job"]["id"] == ghost["id"]], "a rolled-back insert was logged"
    assert job_updates(engine, settings, early["id"]) == [("created", "queued"), ("updated", "processing")], (
        "the rolled-back failure was logged, or the late change lost"
    )
    assert {e.data["job"]["id"] for e in updates(client.events)} == {early["id"], *(j["id"] for j in on_time)}
    assert_no_duplicates(client.events)


def test_bursts_in_one_transaction_are_logged_whole(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    burst = BATCH + 1000  # more than one capture page, in one transaction
    with exact_service(database_url, tmp_path, engine, settings):
        with engine.begin() as conn:
            conn.execute(
                text(
                    """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, created_at, updated_at)
                       SELECT gen_random_uuid(), 'bulk-' || g, gen_random_uuid(), 'queued', now(), now()
                       FROM generate_series(1, :n) AS g"""
                ),
                {"n": burst},
            )
            conn.execute(text("UPDATE archive.analysis_jobs SET status = 'completed' WHERE job_id LIKE 'bulk-%'"))
        wait_until(lambda: len(logged_events(engine, settings)) >= 2 * burst, 60, "every change of the burst")
        time.sleep(0.5)
    events = logged_events(engine, settings)
    assert len(events) == 2 * burst
    first = {}
    for n, (_, kind, job, _) in enumerate(events):
        if kind == "created":
            first[job] = n
        else:
            assert kind == "completed" and first[job] < n, "a job's completion was logged before its creation"


class Writer(threading.Thread):
    """A worker's pace: jobs created, started and finished in their own transactions without a
    pause, every 20th step a transaction creating 200 jobs at once; it records every change it
    committed (job, status), in order. A step whose commit failed is recorded as uncertain
    (it may have committed): `resolve` asks the database."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.halt = threading.Event()
        self.committed: dict[str, list[str]] = {}
        self.uncertain: dict[str, str] = {}
        self.transactions = 0
        self.error: BaseException | None = None

    def _connect(self) -> Any:
        while not self.halt.is_set():
            try:
                return psycopg2.connect(self.database_url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=3)
            except psycopg2.OperationalError:
                time.sleep(0.2)  # the server is restarting
        return None

    def run(self) -> None:
        try:
            conn = self._connect()
            open_jobs: list[tuple[str, str]] = []
            step = 0
            while conn is not None and not self.halt.is_set():
                step += 1
                if len(open_jobs) < 20 or step % 20 == 0:
                    batch = [(str(uuid.uuid4()), "queued") for _ in range(200 if step % 20 == 0 else 1)]
                    sql = (
                        "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, created_at, updated_at) "
                        "SELECT i, 'w-' || i, gen_random_uuid(), 'queued', now(), now() FROM unnest(%s::uuid[]) AS i"
                    )
                    args: tuple[Any, ...] = ([j for j, _ in batch],)
                else:
                    job, status = open_jobs.pop(0)
                    batch = [(job, "processing" if status == "queued" else "completed")]
                    sql = "UPDATE archive.analysis_jobs SET status = %s, updated_at = now() WHERE id = %s"
                    args = (batch[0][1], job)
                try:
                    with conn, conn.cursor() as cur:
                        cur.execute(sql, args)
                except psycopg2.Error:
                    for job, status in batch:
                        self.uncertain[job] = status
                    conn.close()
                    conn = self._connect()
                    continue
                self.transactions += 1
                for job, status in batch:
                    self.committed.setdefault(job, []).append(status)
                    if status != "completed":
                        open_jobs.append((job, status))
            if conn is not None:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert self.error is None, self.error

    def resolve(self, engine: Engine) -> dict[str, list[str]]:
        """Every job's committed statuses, the uncertain steps settled by the rows themselves."""
        expected = {job: list(statuses) for job, statuses in self.committed.items()}
        with engine.connect() as conn:
            for job, status in self.uncertain.items():
                now = conn.execute(text("SELECT status FROM archive.analysis_jobs WHERE id = :id"), {"id": job}).scalar()
                if now == status:
                    expected.setdefault(job, []).append(status)
        return expected


def assert_logged_exactly_once_in_order(engine: Engine, settings: Settings, expected: dict[str, list[str]]) -> None:
    logged: dict[str, list[str]] = {}
    for _, _, job, payload in logged_events(engine, settings):
        if job is not None and payload.get("job"):
            logged.setdefault(job, []).append(payload["job"]["status"])
    assert sum(map(len, expected.values())) > 100, "the writer made too few changes to prove anything"
    wrong = {job: (statuses, logged.get(job)) for job, statuses in expected.items() if logged.get(job) != statuses}
    assert not wrong, f"{len(wrong)} jobs logged differently from what was committed, e.g. {list(wrong.items())[:3]}"
    assert set(logged) == set(expected), "events for changes nobody committed"


def leader_in_transaction(engine: Engine) -> bool:
    """Whether the capture leader's connection (the advisory lock's holder) is inside a transaction."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'admin-service-capture' "
                    "AND a.datname = current_database() AND a.xact_start IS NOT NULL"
                )
            ).scalar()
        )


def json_lines(svc: RunningService) -> list[dict[str, Any]]:
    lines = []
    for line in svc.log().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def settled(engine: Engine, settings: Settings, expected: dict[str, list[str]]) -> bool:
    return pending_changes(engine, settings) == 0 and len(logged_events(engine, settings)) >= sum(map(len, expected.values()))


def test_killing_the_capture_leader_mid_burst_loses_and_repeats_nothing(
    database_url: str, alone: Data, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    install_change_capture(engine, settings)
    writer = Writer(database_url)
    kills = in_transaction = 0
    killed: set[int] = set()

    def leader_pid(services: list[RunningService]) -> int | None:
        """The worker leading now: the one that said so last, is alive and was not killed."""
        alive = {pid for svc in services for pid in svc.workers()} - killed
        led = [line["pid"] for svc in services for line in json_lines(svc) if line.get("msg") == LEADER]
        return next((pid for pid in reversed(led) if pid in alive), None)

    with run_service(database_url, tmp_path, env=ENV) as a, run_service(database_url, tmp_path, env=ENV) as b:
        wait_until(lambda: EXACT_MODE in a.log() + b.log(), 15, "an exact-mode leader")
        writer.start()
        try:
            for _ in range(3):  # SIGKILL whichever worker leads, while the writer goes on
                time.sleep(1.5)
                leader = wait_until(lambda: leader_pid([a, b]), 20, "a live leader")
                # Aim at a page being logged: the leader's connection inside a transaction.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not leader_in_transaction(engine):
                    time.sleep(0.002)
                in_transaction += leader_in_transaction(engine)
                os.kill(leader, signal.SIGKILL)
                killed.add(leader)
                kills += 1
        finally:
            writer.stop()
        expected = writer.resolve(engine)
        wait_until(lambda: leader_pid([a, b]), 20, "a live leader after the last kill")
        wait_until(lambda: settled(engine, settings, expected), 30, "every change logged")
        time.sleep(1.0)
    print(
        f"\n{writer.transactions} writer transactions, {sum(map(len, expected.values()))} changes, {kills} leaders killed "
        f"({in_transaction} seen inside a transaction just before)"
    )
    assert kills == 3
    assert_logged_exactly_once_in_order(engine, settings, expected)


def test_restarting_postgresql_mid_burst_loses_and_repeats_nothing(
    private_server: PrivateServer, private_engine: Engine, tmp_path: Path
) -> None:
    settings = make_settings(private_server.url)
    Data(private_engine).clear()
    reset_event_log(private_engine, settings)
    install_change_capture(private_engine, settings)
    writer = Writer(private_server.url)
    with run_service(private_server.url, tmp_path, env=ENV) as svc:
        wait_log(svc, EXACT_MODE)
        writer.start()
        try:
            time.sleep(1.5)
            before = writer.transactions
            private_server.stop()  # fast shutdown: sessions (the leader's page, the writer's commit) cut
            assert writer.transactions > before or before > 0
            time.sleep(1.0)
            private_server.start()
            private_engine.dispose()
            restarted = writer.transactions
            wait_until(lambda: writer.transactions > restarted + 100, 30, "the writer writing again")
            wait_log(svc, LEADER, timeout=30, count=2)  # the leader's session was cut: it leads again
        finally:
            writer.stop()
        expected = writer.resolve(private_engine)
        wait_until(lambda: settled(private_engine, settings, expected), 60, "every change logged")
        time.sleep(1.0)
    print(f"\n{writer.transactions} writer transactions, {len(writer.uncertain)} uncertain commits settled from the rows")
    assert_logged_exactly_once_in_order(private_engine, settings, expected)
