"""The export over real HTTP, under gunicorn with the gevent worker as production runs it: a
long export does not hold up the worker's other requests, a client that goes away stops it,
and a database error mid-stream ends the download incomplete (never a short file that looks
whole), with the reason in the log."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text

from tests.support.factories import Data
from tests.support.service import RunningService, run_service
from tests.support.tokens import token_for

JOBS = 150_000
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def many_jobs(engine: Engine) -> Iterator[dict[str, Any]]:
    """JOBS jobs, one second apart, and an admin; the tables are emptied afterwards."""
    data = Data(engine)
    data.clear()
    admin = data.user(user_type="admin", email="export-admin@example.com")
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # the engine's 5 s is for requests
        conn.execute(
            text(
                "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, created_at, updated_at, "
                "assessment_name, priority, retry_count, max_retries) "
                "SELECT gen_random_uuid(), 'bulk-' || g, CAST(:user_id AS uuid), 'completed', "
                "now() - g * interval '1 second', now() - g * interval '1 second', 'Custom Assessment', 0, 0, 3 "
                "FROM generate_series(1, :n) AS g"
            ),
            {"user_id": admin["id"], "n": JOBS},
        )
        conn.exec_driver_sql("ANALYZE archive.analysis_jobs")
    yield admin
    data.clear()


def headers_for(admin: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(admin)}"}


def wait_for_log(service: RunningService, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, service.log())
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}:\n{service.log_tail(60)}")
        time.sleep(0.1)


def test_other_requests_are_answered_while_an_export_runs(database_url: str, tmp_path: Path, many_jobs: dict[str, Any]) -> None:
    auth = headers_for(many_jobs)
    with run_service(database_url, tmp_path, env={"EXPORT_BATCH_ROWS": "500"}) as service:
        lines = 0
        done = threading.Event()

        def download() -> None:
            nonlocal lines
            with requests.get(f"{service.url}/admin/jobs/export", headers=auth, stream=True, timeout=120) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_content(CHUNK):
                    lines += chunk.count(b"\r\n")
            done.set()

        reader = threading.Thread(target=download, daemon=True)
        reader.start()
        while lines == 0 and not done.is_set():
            time.sleep(0.01)
        answered_during_export = 0
        for _ in range(5):
            listed = requests.get(f"{service.url}/admin/jobs", params={"limit": 5, "count": "none"}, headers=auth, timeout=30)
            assert listed.status_code == 200
            answered_during_export += not done.is_set()
        reader.join(120)
        assert done.is_set()
    assert lines == JOBS + 1  # the header and every job
    # The worker served the page views between the export's batches instead of after it.
    assert answered_during_export == 5


def test_a_client_that_goes_away_stops_the_export(
    database_url: str, engine: Engine, tmp_path: Path, many_jobs: dict[str, Any]
) -> None:
    auth = headers_for(many_jobs)
    with run_service(database_url, tmp_path, env={"EXPORT_BATCH_ROWS": "500"}) as service:
        # A plain socket: read the start of the answer, then close with unread data (a cancelled download).
        with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
            request = f"GET /admin/jobs/export HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n\r\n"
            sock.sendall(request.encode())
            start = sock.recv(CHUNK)
            assert start.startswith(b"HTTP/1.1 200")
        found = wait_for_log(service, r'"msg": "export stopped: the client went away".*?"rows": (\d+)')
        assert int(found.group(1)) < JOBS
        # Nothing of the export keeps running in the database.
        with engine.connect() as conn:
            running = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%page_user%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert running == 0


def test_a_database_error_mid_stream_ends_the_download_incomplete(
    database_url: str, engine: Engine, tmp_path: Path, many_jobs: dict[str, Any]
) -> None:
    auth = headers_for(many_jobs)
    env = {"EXPORT_BATCH_ROWS": "500", "DB_STATEMENT_TIMEOUT_MS": "300"}
    with run_service(database_url, tmp_path, env=env) as service:
        resp = requests.get(
            f"{service.url}/admin/jobs/export", params={"format": "ndjson"}, headers=auth, stream=True, timeout=60
        )
        assert resp.status_code == 200
        body = resp.iter_content(CHUNK)
        received = len(next(body))
        # A lock the export's next batch waits for: its statement times out (57014).
        with engine.connect() as locker:
            locker.exec_driver_sql("BEGIN")
            locker.exec_driver_sql("LOCK TABLE archive.analysis_jobs IN ACCESS EXCLUSIVE MODE")
            try:
                with pytest.raises(requests.exceptions.ChunkedEncodingError):
                    for chunk in body:
                        received += len(chunk)
            finally:
                locker.exec_driver_sql("ROLLBACK")
        found = wait_for_log(service, r'"msg": "export aborted after a database error: ([^"]*)".*?"rows": (\d+)')
        assert "QueryCanceled" in found.group(1) and "57014" in found.group(1)
        assert 0 < int(found.group(2)) < JOBS
        # What arrived is whole lines of what was sent before the failure, no more.
        assert received < JOBS * 200
