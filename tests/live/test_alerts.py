"""Alert rules against a real PostgreSQL: thresholds, one raise per episode, resolution,
new episodes, per-job retries_exhausted, and index-only access to the jobs table."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from admin_service.config import Settings
from admin_service.live.alerts import evaluate_rules, job_alerts
from admin_service.live.log import EventLog, NewEvent
from tests.support.factories import Data, utcnow
from tests.support.settings import make_settings

PAYLOAD_KEYS = {"type", "severity", "message", "data", "timestamp"}


@pytest.fixture
def clean(engine: Engine, data: Data, settings: Settings) -> Data:
    """Empty archive tables and no alert episodes (tests share one database)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{settings.admin_schema}".alert_state')
    return data


def evaluate(engine: Engine, settings: Settings, now: datetime | None = None) -> list[NewEvent]:
    """One pass as capture runs it: evaluate and append in one transaction, then commit."""
    conn = engine.raw_connection()
    try:
        with conn.cursor() as cur:
            events = evaluate_rules(cur, settings, now)
            ids = EventLog(settings.admin_schema).append(cur, events)
        conn.commit()
    finally:
        conn.close()
    assert len(ids) == len(events), "every raise/clear must have a dedupe key of its own"
    for event in events:
        assert event.event == "job-alert"
        assert set(event.payload) == PAYLOAD_KEYS
        assert event.payload["type"] == event.kind
        json.dumps(event.payload)  # no default=str: the payload must be JSON as it is
    return events


def logged_payload(engine: Engine, settings: Settings, dedupe_key: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f'SELECT payload FROM "{settings.admin_schema}".job_events WHERE dedupe_key = %(k)s', {"k": dedupe_key}
        ).all()
    return [r[0] for r in rows]


def only(events: list[NewEvent], kind: str) -> NewEvent:
    assert [e.kind for e in events] == [kind], events
    return events[0]


def assert_resolution(event: NewEvent, raised: NewEvent) -> None:
    assert event.kind == raised.kind
    assert event.payload["severity"] == "low"
    assert event.payload["data"]["resolved"] is True
    assert "cleared" in event.payload["message"]
    assert event.dedupe_key != raised.dedupe_key


def set_status(data: Data, job: dict[str, Any], status: str) -> None:
    data.execute("UPDATE archive.analysis_jobs SET status = :s, updated_at = now() WHERE id = :id", s=status, id=job["id"])


# --- high_failure_rate -------------------------------------------------------------------


@pytest.fixture
def failure_settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        env={
            "ALERT_FAILURE_RATE": "0.5",
            "ALERT_FAILURE_MIN_JOBS": "4",
            "ALERT_FAILURE_WINDOW_MIN": "15",
            "ALERT_SEVERITIES": "high_failure_rate=critical",
        },
    )


def finished(data: Data, status: str, n: int, minutes_ago: float = 1) -> None:
    for _ in range(n):
        data.job(status=status, created_at=utcnow() - timedelta(minutes=minutes_ago))


def test_failure_rate_episode(engine: Engine, clean: Data, failure_settings: Settings) -> None:
    finished(clean, "completed", 2)
    finished(clean, "failed", 2)  # 2/4 = 50 %: not above the threshold
    finished(clean, "failed", 6, minutes_ago=30)  # outside the window
    finished(clean, "cancelled", 3)  # not finished work for the rate
    clean.job(status="processing", created_at=utcnow(), processing_started_at=utcnow())
    assert evaluate(engine, failure_settings) == []

    finished(clean, "failed", 1)  # 3/5 = 60 %
    raised = only(evaluate(engine, failure_settings), "high_failure_rate")
    assert raised.payload["severity"] == "critical"
    assert raised.payload["data"] == {"failed": 3, "finished": 5, "rate": 0.6, "windowMinutes": 15, "threshold": 0.5}
    assert logged_payload(engine, failure_settings, raised.dedupe_key) == [raised.payload]

    finished(clean, "failed", 2)  # still above: same episode, nothing new
    assert evaluate(engine, failure_settings) == []

    finished(clean, "completed", 5)  # 5/12 ≈ 42 %
    cleared = only(evaluate(engine, failure_settings), "high_failure_rate")
    assert_resolution(cleared, raised)
    assert cleared.payload["data"]["failed"] == 5 and cleared.payload["data"]["finished"] == 12
    assert evaluate(engine, failure_settings) == []

    finished(clean, "failed", 4)  # 9/16: a new episode
    again = only(evaluate(engine, failure_settings), "high_failure_rate")
    assert again.payload["severity"] == "critical"
    assert again.dedupe_key not in (raised.dedupe_key, cleared.dedupe_key)


def test_failure_rate_needs_minimum_volume(engine: Engine, clean: Data, failure_settings: Settings) -> None:
    finished(clean, "failed", 3)  # 100 % of 3 jobs: too few to mean anything
    assert evaluate(engine, failure_settings) == []
    finished(clean, "failed", 1)
    raised = only(evaluate(engine, failure_settings), "high_failure_rate")
    assert raised.payload["data"]["finished"] == 4 and raised.payload["data"]["rate"] == 1.0


def test_failure_rate_window_follows_now(engine: Engine, clean: Data, failure_settings: Settings) -> None:
    finished(clean, "failed", 4)
    assert only(evaluate(engine, failure_settings), "high_failure_rate")
    # 20 minutes later the failures have left the 15-minute window: the episode ends.
    later = utcnow() + timedelta(minutes=20)
    cleared = only(evaluate(engine, failure_settings, now=later), "high_failure_rate")
    assert cleared.payload["data"]["finished"] == 0

    # A second episode starts when it is raised and says so when it clears.
    for _ in range(4):
        clean.job(status="failed", created_at=later)
    raised_at = later + timedelta(minutes=5)
    assert only(evaluate(engine, failure_settings, now=raised_at), "high_failure_rate")
    cleared = only(evaluate(engine, failure_settings, now=later + timedelta(minutes=30)), "high_failure_rate")
    assert cleared.payload["data"]["raisedAt"] == raised_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- queue_overflow ----------------------------------------------------------------------


@pytest.fixture
def queue_settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        env={"ALERT_QUEUE_MAX": "3", "ALERT_QUEUE_MAX_AGE_S": "600", "ALERT_SEVERITIES": "queue_overflow=high"},
    )


def queued(data: Data, n: int, status: str = "queued", seconds_ago: float = 5) -> list[dict[str, Any]]:
    return [data.job(status=status, created_at=utcnow() - timedelta(seconds=seconds_ago)) for _ in range(n)]


def test_queue_overflow_by_count_episode(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    jobs = queued(clean, 3)
    clean.job(status="processing", created_at=utcnow() - timedelta(hours=2), processing_started_at=utcnow())
    assert evaluate(engine, queue_settings) == []

    jobs += queued(clean, 1, status="queue")  # the legacy spelling is queued too: 4 > 3
    raised = only(evaluate(engine, queue_settings), "queue_overflow")
    assert raised.payload["severity"] == "high"
    data = raised.payload["data"]
    assert data["queued"] == 4 and data["maxQueued"] == 3 and data["maxAgeSeconds"] == 600
    assert isinstance(data["oldestAgeSeconds"], int) and 0 <= data["oldestAgeSeconds"] < 600
    assert evaluate(engine, queue_settings) == []

    set_status(clean, jobs[0], "processing")
    set_status(clean, jobs[3], "processing")
    cleared = only(evaluate(engine, queue_settings), "queue_overflow")
    assert_resolution(cleared, raised)
    assert cleared.payload["data"]["queued"] == 2
    assert evaluate(engine, queue_settings) == []

    queued(clean, 2)
    again = only(evaluate(engine, queue_settings), "queue_overflow")
    assert again.dedupe_key not in (raised.dedupe_key, cleared.dedupe_key)
    assert again.payload["data"]["queued"] == 4


def test_queue_overflow_by_age(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    queued(clean, 1, seconds_ago=500)
    assert evaluate(engine, queue_settings) == []

    old = queued(clean, 1, status="queue", seconds_ago=1200)[0]  # a legacy row, waiting too long
    raised = only(evaluate(engine, queue_settings), "queue_overflow")
    assert raised.payload["data"]["queued"] == 2
    assert 1200 <= raised.payload["data"]["oldestAgeSeconds"] < 1300
    assert "waiting" in raised.payload["message"]

    set_status(clean, old, "processing")
    cleared = only(evaluate(engine, queue_settings), "queue_overflow")
    assert 500 <= cleared.payload["data"]["oldestAgeSeconds"] < 600


def test_empty_queue_has_no_age(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    jobs = queued(clean, 4)
    raised = only(evaluate(engine, queue_settings), "queue_overflow")
    for job in jobs:
        set_status(clean, job, "completed")
    cleared = only(evaluate(engine, queue_settings), "queue_overflow")
    assert_resolution(cleared, raised)
    assert cleared.payload["data"]["queued"] == 0 and cleared.payload["data"]["oldestAgeSeconds"] is None


# --- processing_timeout ------------------------------------------------------------------


@pytest.fixture
def timeout_settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        env={"ALERT_PROCESSING_TIMEOUT_S": "300", "ALERT_SEVERITIES": "processing_timeout=critical"},
    )


def processing(data: Data, seconds_ago: float, **fields: Any) -> dict[str, Any]:
    started = utcnow() - timedelta(seconds=seconds_ago)
    return data.job(status="processing", created_at=started - timedelta(seconds=5), processing_started_at=started, **fields)


def test_processing_timeout_episode(engine: Engine, clean: Data, timeout_settings: Settings) -> None:
    processing(clean, 120)
    # Only processing rows count, however old their start.
    clean.job(status="completed", created_at=utcnow() - timedelta(hours=2), processing_started_at=utcnow() - timedelta(hours=2))
    clean.job(status="failed", created_at=utcnow() - timedelta(hours=2), processing_started_at=utcnow() - timedelta(hours=2))
    assert evaluate(engine, timeout_settings) == []

    stuck = processing(clean, 600)
    raised = only(evaluate(engine, timeout_settings), "processing_timeout")
    assert raised.payload["severity"] == "critical"
    data = raised.payload["data"]
    assert data["count"] == 1 and data["timeoutSeconds"] == 300 and data["jobIds"] == [stuck["id"]]
    started = datetime.fromisoformat(data["oldestStartedAt"].replace("Z", "+00:00"))
    assert abs(started - stuck["processing_started_at"]) < timedelta(milliseconds=1)
    assert evaluate(engine, timeout_settings) == []

    set_status(clean, stuck, "completed")
    cleared = only(evaluate(engine, timeout_settings), "processing_timeout")
    assert_resolution(cleared, raised)
    assert cleared.payload["data"]["count"] == 0 and cleared.payload["data"]["jobIds"] == []
    assert evaluate(engine, timeout_settings) == []

    processing(clean, 900)
    again = only(evaluate(engine, timeout_settings), "processing_timeout")
    assert again.dedupe_key not in (raised.dedupe_key, cleared.dedupe_key)


def test_processing_timeout_lists_ten_oldest(engine: Engine, clean: Data, timeout_settings: Settings) -> None:
    jobs = [processing(clean, 400 + 10 * i) for i in range(12)]
    data = only(evaluate(engine, timeout_settings), "processing_timeout").payload["data"]
    assert data["count"] == 12
    oldest_first = [j["id"] for j in sorted(jobs, key=lambda j: j["processing_started_at"])]
    assert data["jobIds"] == oldest_first[:10]


def test_processing_timeout_follows_now(engine: Engine, clean: Data, timeout_settings: Settings) -> None:
    processing(clean, 120)
    assert evaluate(engine, timeout_settings) == []
    # Ten minutes later the same job has been processing for 12 minutes.
    assert only(evaluate(engine, timeout_settings, now=utcnow() + timedelta(minutes=10)), "processing_timeout")


def test_processing_without_start_time_judged_by_updated_at(engine: Engine, clean: Data, timeout_settings: Settings) -> None:
    # A writer that never set processing_started_at: stuck for an hour all the same.
    old = utcnow() - timedelta(hours=1)
    job = clean.job(status="processing", created_at=old, updated_at=old, processing_started_at=None)
    clean.job(status="processing", created_at=utcnow(), processing_started_at=None)  # just updated: fine
    assert only(evaluate(engine, timeout_settings), "processing_timeout").payload["data"]["jobIds"] == [job["id"]]


# --- episodes across rules and transactions ---------------------------------------------


def test_rules_are_independent(engine: Engine, clean: Data, database_url: str) -> None:
    settings = make_settings(database_url, env={"ALERT_QUEUE_MAX": "1", "ALERT_PROCESSING_TIMEOUT_S": "60"})
    queued(clean, 2)
    assert [e.kind for e in evaluate(engine, settings)] == ["queue_overflow"]
    processing(clean, 120)
    # The queue episode is still on: only the new rule raises.
    raised = evaluate(engine, settings)
    assert [e.kind for e in raised] == ["processing_timeout"]
    assert raised[0].payload["severity"] == "high"  # the default severity of this rule


def test_episode_state_is_stored(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    def state() -> tuple[bool, dict[str, Any]]:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                f"SELECT active, data FROM \"{queue_settings.admin_schema}\".alert_state WHERE rule = 'queue_overflow'"
            ).one()
        return row[0], row[1]

    jobs = queued(clean, 4)
    raised = only(evaluate(engine, queue_settings), "queue_overflow")
    assert state() == (True, raised.payload["data"])
    for job in jobs:
        set_status(clean, job, "cancelled")
    cleared = only(evaluate(engine, queue_settings), "queue_overflow")
    assert state() == (False, cleared.payload["data"])


def test_concurrent_evaluators_raise_once(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    """A second evaluator waits for the first one's episode state instead of raising again."""
    assert evaluate(engine, queue_settings) == []  # the state rows exist from here on
    queued(clean, 4)
    first, second = engine.raw_connection(), engine.raw_connection()
    results: list[list[NewEvent]] = []
    try:
        with first.cursor() as cur:
            assert [e.kind for e in evaluate_rules(cur, queue_settings)] == ["queue_overflow"]

        def other() -> None:
            with second.cursor() as cur:
                results.append(evaluate_rules(cur, queue_settings))
            second.commit()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second evaluator must wait for the first one's lock"
        first.commit()
        thread.join(10)
        assert results == [[]]
    finally:
        first.close()
        second.close()


def test_rolled_back_pass_changes_nothing(engine: Engine, clean: Data, queue_settings: Settings) -> None:
    queued(clean, 4)
    conn = engine.raw_connection()
    try:
        with conn.cursor() as cur:
            assert [e.kind for e in evaluate_rules(cur, queue_settings)] == ["queue_overflow"]
        conn.rollback()  # the events were never logged, so the episode must not be marked raised
    finally:
        conn.close()
    assert only(evaluate(engine, queue_settings), "queue_overflow")


def test_rules_read_jobs_through_indexes(engine: Engine, clean: Data, database_url: str) -> None:
    """Every query on analysis_jobs has an index path (no Seq Scan even when seq scans cost ∞)."""
    settings = make_settings(database_url, env={"ALERT_PROCESSING_TIMEOUT_S": "60"})
    processing(clean, 120)  # so the job-id query runs too
    queued(clean, 2)
    finished(clean, "failed", 3)

    class Recording:
        def __init__(self, cur: Any) -> None:
            self.cur = cur
            self.queries: list[tuple[str, Any]] = []

        def execute(self, sql: str, params: Any = None) -> None:
            self.queries.append((sql, params))
            self.cur.execute(sql, params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cur, name)

    conn = engine.raw_connection()
    try:
        with conn.cursor() as cur:
            recording = Recording(cur)
            evaluate_rules(recording, settings)
            job_queries = [q for q in recording.queries if "archive.analysis_jobs" in q[0]]
            assert len(job_queries) == 4
            cur.execute("SET LOCAL enable_seqscan = off")
            for sql, params in job_queries:
                cur.execute("EXPLAIN " + sql, params)
                plan = "\n".join(r[0] for r in cur.fetchall())
                assert "Seq Scan" not in plan, plan
        conn.rollback()
    finally:
        conn.close()


# --- retries_exhausted -------------------------------------------------------------------


def job_row(**fields: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4(),
        "job_id": f"job-{uuid.uuid4().hex[:8]}",
        "user_id": uuid.uuid4(),
        "status": "failed",
        "error_message": "model timed out",
        "assessment_name": "AI-Based IQ Test",
        "created_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC),
        "retry_count": 3,
        "max_retries": 3,
    }
    row.update(fields)
    return row


def test_retries_exhausted_only_when_retries_used_up(database_url: str) -> None:
    settings = make_settings(database_url, env={"ALERT_SEVERITIES": "retries_exhausted=critical"})
    exhausted = job_row()
    beyond = job_row(retry_count=5)
    jobs = [exhausted, beyond, job_row(retry_count=2), job_row(status="completed"), job_row(status="processing", retry_count=4)]
    events = job_alerts(jobs, settings)
    assert [e.job_row_id for e in events] == [str(exhausted["id"]), str(beyond["id"])]

    event = events[0]
    assert (event.event, event.kind, event.status) == ("job-alert", "retries_exhausted", "failed")
    assert event.dedupe_key == f"alert:retries_exhausted:{exhausted['id']}"
    assert set(event.payload) == PAYLOAD_KEYS
    assert event.payload["type"] == "retries_exhausted" and event.payload["severity"] == "critical"
    job = json.loads(json.dumps(event.payload))["data"]["job"]  # UUIDs and all: plain JSON
    assert job["id"] == str(exhausted["id"]) and job["job_id"] == exhausted["job_id"]
    assert job["user_id"] == str(exhausted["user_id"])
    assert (job["retry_count"], job["max_retries"], job["error_message"]) == (3, 3, "model timed out")
    assert exhausted["job_id"] in event.payload["message"]

    assert job_alerts([job_row(error_message="x" * 5000)], settings)[0].payload["data"]["job"]["error_message"] == "x" * 1000
    assert job_alerts([], settings) == []


def test_retries_exhausted_logged_once(engine: Engine, clean: Data, settings: Settings) -> None:
    failed = clean.job(status="failed", retry_count=3, max_retries=3, created_at=utcnow())
    conn = engine.raw_connection()
    try:
        with conn.cursor() as cur:
            first = EventLog(settings.admin_schema).append(cur, job_alerts([failed], settings))
            # The same row captured again (overlap window, restart): nothing new.
            second = EventLog(settings.admin_schema).append(cur, job_alerts([dict(failed)], settings))
        conn.commit()
    finally:
        conn.close()
    assert len(first) == 1 and second == []
    logged = logged_payload(engine, settings, f"alert:retries_exhausted:{failed['id']}")
    assert len(logged) == 1 and logged[0]["severity"] == "medium"  # the default severity
    assert logged[0]["data"]["job"]["id"] == failed["id"]


@pytest.fixture(autouse=True)
def _no_leftover_episodes(engine: Engine, settings: Settings) -> Iterator[None]:
    """Leave no active episode behind for whichever test file runs next."""
    yield
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{settings.admin_schema}".alert_state')
