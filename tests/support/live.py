"""Live events end to end: settings that make everything happen within a second or two, job
rows written as the platform writes them, and matchers and waits for what subscribers get."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.archive_options import change_capture_ddl, drop_change_capture_ddl, drop_notify_trigger_ddl, run_ddl
from tests.support import ROOT
from tests.support.service import RunningService
from tests.support.settings import TEST_SECRET
from tests.support.sse_client import SSEEvent
from tests.support.tokens import bearer

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
EXACT_MODE = "capture mode: exact"


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """python -m admin_service ARGS against the database; asserts it succeeded."""
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": TEST_SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def drop_trigger(engine: Engine, settings: Settings) -> None:
    """Neither the notify trigger nor change capture on archive.analysis_jobs."""
    run_ddl(engine, drop_notify_trigger_ddl(settings))
    run_ddl(engine, drop_change_capture_ddl(settings))


def install_change_capture(engine: Engine, settings: Settings) -> None:
    run_ddl(engine, change_capture_ddl(settings))


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

    def set_status(self, job: dict[str, Any], status: str, *, error_message: str | None = None, conn: Any = None) -> None:
        sql = text(
            """UPDATE archive.analysis_jobs SET status = :status, updated_at = now(),
                   error_message = COALESCE(:error_message, error_message),
                   processing_started_at = CASE WHEN :status = 'processing' THEN now() ELSE processing_started_at END,
                   completed_at = CASE WHEN :status IN ('completed', 'failed', 'cancelled') THEN now() ELSE completed_at END
               WHERE id = :id"""
        )
        params = {"status": status, "error_message": error_message, "id": job["id"]}
        if conn is not None:  # the caller's open transaction
            conn.execute(sql, params)
            return
        with self.engine.begin() as own:
            own.execute(sql, params)
        self.committed_at = time.monotonic()
        job["status"] = status


def for_job(job: dict[str, Any], kind: str | None = None) -> Callable[[SSEEvent], bool]:
    def match(event: SSEEvent) -> bool:
        return event.name == JOB_UPDATE and event.data["job"]["id"] == job["id"] and (kind is None or event.data["event"] == kind)

    return match


def latencies(client: Any, jobs: Jobs, count: int, spread_s: float) -> list[float]:
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


def rest_row(svc: RunningService, token: str, job: dict[str, Any]) -> dict[str, Any]:
    """The job as GET /admin/jobs lists it."""
    response = requests.get(f"{svc.url}/admin/jobs", params={"search": job["job_id"]}, headers=bearer(token), timeout=5)
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["data"]["jobs"] if r["id"] == job["id"]]
    assert len(rows) == 1
    return rows[0]


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
