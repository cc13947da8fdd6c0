"""The database goes away and comes back: 503 in the envelope meanwhile, no restart needed after.

Runs on a PRIVATE embedded PostgreSQL (stopped and restarted here); the machine's shared
server is never touched.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from werkzeug.test import TestResponse

from admin_service import create_app
from admin_service.db.engine import make_engine
from tests.support.factories import Data
from tests.support.postgres import PrivateServer, table_locked
from tests.support.settings import make_settings
from tests.support.tokens import bearer, token_for


@pytest.fixture
def seeded(private_engine: Engine) -> dict[str, Any]:
    data = Data(private_engine)
    data.clear()
    admin = data.user(user_type="admin")
    other_admin = data.user(user_type="superadmin")
    done = data.job(status="completed", completed_at=datetime.now(UTC))
    data.result(done)
    data.job(status="queued")
    data.job(status="failed")
    return {"admin": admin, "other_admin": other_admin, "done": done}


def assert_unavailable(response: TestResponse) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["error"]["message"]
    assert int(response.headers["Retry-After"]) > 0
    text_ = response.get_data(as_text=True)
    assert "Traceback" not in text_ and "psycopg2" not in text_


def timed_get(client: FlaskClient, path: str, headers: dict[str, str] | None = None) -> tuple[TestResponse, float]:
    started = time.monotonic()
    response = client.get(path, headers=headers)
    return response, time.monotonic() - started


def test_outage_gives_503_and_recovery_needs_no_restart(
    private_server: PrivateServer, private_engine: Engine, seeded: dict[str, Any]
) -> None:
    app: Flask = create_app(make_settings(private_server.url), private_engine)
    client = app.test_client()
    auth = bearer(token_for(seeded["admin"]))
    done = seeded["done"]
    paths = ["/admin/jobs", f"/admin/jobs/{done['id']}", f"/admin/jobs/{done['job_id']}/results", "/admin/jobs/stats?fresh=true"]

    for path in paths:
        assert client.get(path, headers=auth).status_code == 200, path
    assert client.get("/health/ready").status_code == 200

    private_server.stop()
    try:
        # An admin seen just before (user possibly cached) and one never seen (lookup needed).
        for headers in (auth, bearer(token_for(seeded["other_admin"]))):
            for path in paths:
                response, seconds = timed_get(client, path, headers)
                assert_unavailable(response)
                assert seconds < 10, f"{path} took {seconds:.1f} s"
        live = client.get("/health")
        assert live.status_code == 200
        assert live.get_json()["success"] is True
        ready = client.get("/health/ready")
        assert_unavailable(ready)
    finally:
        private_server.start()

    # The same app, its pool full of dead connections, answers again.
    assert client.get("/health/ready").status_code == 200
    listing = client.get("/admin/jobs", headers=auth)
    assert listing.status_code == 200
    assert listing.get_json()["data"]["pagination"]["total"] == 3
    details = client.get(f"/admin/jobs/{done['id']}", headers=bearer(token_for(seeded["other_admin"])))
    assert details.status_code == 200
    assert details.get_json()["data"]["job_id"] == done["job_id"]
    stats = client.get("/admin/jobs/stats?fresh=true", headers=auth)
    assert stats.status_code == 200
    assert stats.get_json()["data"]["overview"]["total"] == 3


def test_slow_query_hits_statement_timeout_instead_of_hanging(
    private_server: PrivateServer, private_engine: Engine, seeded: dict[str, Any]
) -> None:
    settings = make_settings(private_server.url, env={"DB_STATEMENT_TIMEOUT_MS": "300"})
    app_engine = make_engine(settings)
    client = create_app(settings, app_engine).test_client()
    auth = bearer(token_for(seeded["admin"]))
    assert client.get("/admin/jobs", headers=auth).status_code == 200

    with table_locked(private_engine, "archive.analysis_jobs"):
        for path in ("/admin/jobs", f"/admin/jobs/{seeded['done']['id']}", "/admin/jobs/stats?fresh=true"):
            response, seconds = timed_get(client, path, auth)
            assert_unavailable(response)
            assert seconds < 3, f"{path} took {seconds:.1f} s"

    try:
        # The lock is gone: the same app and pool answer normally.
        response = client.get("/admin/jobs", headers=auth)
        assert response.status_code == 200
        assert response.get_json()["data"]["pagination"]["total"] == 3
    finally:
        app_engine.dispose()


def test_requests_waiting_for_a_locked_table_do_not_pile_up(
    private_server: PrivateServer, private_engine: Engine, seeded: dict[str, Any]
) -> None:
    """Concurrent callers each get their 503 within the timeout; none waits for the lock's holder."""
    settings = make_settings(private_server.url, env={"DB_STATEMENT_TIMEOUT_MS": "300"})
    app_engine = make_engine(settings)
    app = create_app(settings, app_engine)
    auth = bearer(token_for(seeded["admin"]))
    assert app.test_client().get("/admin/jobs", headers=auth).status_code == 200
    results: list[tuple[int, float]] = []

    def call() -> None:
        response, seconds = timed_get(app.test_client(), "/admin/jobs", auth)
        results.append((response.status_code, seconds))

    with table_locked(private_engine, "archive.analysis_jobs"):
        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        app_engine.dispose()

    assert len(results) == 5
    assert all(status == 503 for status, _ in results), results
    assert max(seconds for _, seconds in results) < 3, results
