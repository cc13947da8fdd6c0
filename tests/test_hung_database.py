"""A database that hangs (every server process stopped with SIGSTOP, as a frozen host or a storage
stall leaves it) answers 503 in the envelope within a few seconds, not 200 after the hang; the
capture leader, the event-log tail and the open SSE streams come through it.

statement_timeout is the server's: a stopped server enforces nothing, and its kernel keeps
accepting what is sent. The client-side deadline (admin_service/db/green.py) is what answers.
Runs on a PRIVATE embedded PostgreSQL; the machine's shared server is never touched.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import Engine

from tests.support.factories import Data, utcnow
from tests.support.live import for_job, wait_until
from tests.support.postgres import PrivateServer
from tests.support.service import run_service
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for

HANG_S = 15
STATEMENT_TIMEOUT_MS = 1500  # the client's deadline: 2.5 s
# What a request may take while the database hangs: the rate-limit store's deadline (1 s, once
# per worker before it falls back to memory), the user lookup's and the query's (2.5 s each),
# with room for a loaded machine. Far below the 15 s hang.
ANSWER_WITHIN_S = 9
ENV = {
    "DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
    "AUTH_CACHE_SECONDS": "1",
    "CAPTURE_POLL_MS": "200",
    "TAIL_POLL_MS": "200",
    "SSE_HEARTBEAT_S": "1",
    "RATE_LIMIT_STORAGE_URI": "database://",
}


def test_a_hung_database_answers_503_within_seconds_and_everything_recovers(
    private_server: PrivateServer, private_engine: Engine, tmp_path: Path
) -> None:
    data = Data(private_engine)
    data.clear()
    admin = data.user(user_type="admin")
    done = data.job(status="completed", completed_at=datetime.now(UTC))
    token = token_for(admin)
    paths = ["/admin/jobs", f"/admin/jobs/{done['id']}", "/admin/jobs/stats?fresh=true", "/health/ready"]

    with run_service(private_server.url, tmp_path, workers=2, env=ENV) as svc:

        def ask(path: str) -> tuple[str, int, float, requests.Response]:
            started = time.monotonic()
            response = requests.get(f"{svc.url}{path}", headers=bearer(token), timeout=HANG_S + 20)
            return path, response.status_code, time.monotonic() - started, response

        for path in paths:
            assert ask(path)[1] == 200, path
        with SSEClient(svc.url, token=token, params={"events": "job-update"}) as stream:
            assert stream.status == 200
            with private_server.frozen():
                frozen_at = time.monotonic()
                time.sleep(1.5)  # past AUTH_CACHE_SECONDS: the user lookup needs the database too
                # Each path twice, at once: both workers meet the hang.
                with ThreadPoolExecutor(len(paths) * 2) as pool:
                    answers = list(pool.map(ask, paths * 2))
                assert time.monotonic() - frozen_at < HANG_S, "the answers came while the database still hung"
                stream.pump(0.5)
                assert not stream.ended, "an SSE stream ended because the database hung"
                time.sleep(max(0.0, HANG_S - (time.monotonic() - frozen_at)))
            for path, status, seconds, response in answers:
                assert status == 503, (path, status, response.text[:300])
                body = response.json()
                assert body["success"] is False and body["error"]["code"] == "SERVICE_UNAVAILABLE", body
                assert response.headers["Retry-After"] == "5", path
                assert seconds < ANSWER_WITHIN_S, f"{path} took {seconds:.1f} s"

            # Thawed: every path answers again, on both workers, without a restart.
            wait_until(lambda: all(ask(path)[1] == 200 for path in paths * 4), 30, "every path 200 again")
            # The stream that was open all along gets a change made after the hang: the capture
            # leader and this worker's tail recovered (or were replaced) and it was never dropped.
            now = utcnow()
            job = data.job(status="queued", created_at=now, updated_at=now)
            stream.wait_for(for_job(job), timeout=30, what="the new job on the stream opened before the hang")
        log = svc.log()
    assert "Traceback" not in log, log[-3000:]
    print(f"\nanswers while hung: {sorted((p, round(s, 2)) for p, _, s, _ in answers)}")
