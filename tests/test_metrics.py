"""GET /metrics: Prometheus metrics of the service under gunicorn (two workers, multiprocess
mode), moving as requests and events happen, and access control."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
import socketio
from sqlalchemy import Engine

from admin_service import create_app, metrics
from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data, utcnow
from tests.support.metrics import P, Samples, scrape, value
from tests.support.service import RunningService, run_service
from tests.support.settings import make_settings
from tests.support.tokens import bearer, token_for


def wait_for(url: str, check: Callable[[Samples], bool], timeout: float = 15) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


@pytest.fixture(scope="module")
def service(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    env = {
        "DB_POOL_MAX": "4",
        "JOB_STATS_INTERVAL_MS": "250",
        "CAPTURE_POLL_MS": "100",
        "TAIL_POLL_MS": "100",
        "SSE_HEARTBEAT_S": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    with run_service(database_url, tmp_path_factory.mktemp("metrics"), workers=2, env=env) as running:
        yield running


@pytest.fixture
def admin_headers(data: Data) -> dict[str, str]:
    admin = data.user(user_type="admin", email=f"metrics-{uuid.uuid4().hex[:6]}@example.com")
    return bearer(token_for(admin))


def test_requests_are_counted_per_route_and_status_across_workers(
    service: RunningService, data: Data, admin_headers: dict[str, str]
) -> None:
    job = data.job(status="failed")
    route = "/admin/jobs/<string:job_ref>"
    before = scrape(service.url)
    # Fresh connections: gunicorn hands them to either worker.
    for _ in range(6):
        assert requests.get(f"{service.url}/admin/jobs/{job['id']}", headers=admin_headers, timeout=10).status_code == 200
    assert requests.get(f"{service.url}/admin/jobs/{uuid.uuid4()}", headers=admin_headers, timeout=10).status_code == 404
    assert requests.get(f"{service.url}/admin/jobs/{job['id']}", timeout=10).status_code == 401
    assert requests.get(f"{service.url}/no/such/path", timeout=10).status_code == 404
    after = scrape(service.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counter = f"{P}_http_requests_total"
    assert moved(counter, endpoint=route, method="GET", status="200") == 6
    assert moved(counter, endpoint=route, status="404") == 1
    assert moved(counter, endpoint=route, status="401") == 1
    assert moved(counter, endpoint="<unmatched>", status="404") == 1
    assert moved(f"{P}_http_request_duration_seconds_count", endpoint=route, status="200") == 6
    assert moved(f"{P}_http_request_duration_seconds_sum", endpoint=route, status="200") > 0
    # The route, never the raw path: ids do not become label values.
    assert not any(job["id"] in value_ for (_, labels) in after for _, value_ in labels)


def test_job_counts_come_from_the_shared_stats(service: RunningService, data: Data) -> None:
    for status in ("queued", "queued", "processing", "completed", "failed", "cancelled", "queued"):
        data.job(status=status)
    samples = wait_for(service.url, lambda s: value(s, f"{P}_jobs", status="queued") == 3)
    assert {s: value(samples, f"{P}_jobs", status=s) for s in ("queued", "processing", "completed", "failed", "cancelled")} == {
        "queued": 3,
        "processing": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert value(samples, f"{P}_jobs_total_count") == 7
    assert value(samples, f"{P}_job_stats_up") == 1


def test_capture_and_live_events_move(service: RunningService, data: Data) -> None:
    samples = wait_for(service.url, lambda s: value(s, f"{P}_capture_leader") == 1)
    assert value(samples, f"{P}_capture_leader") == 1, "exactly one worker leads capture"
    before = scrape(service.url)
    job = data.job(status="processing", created_at=utcnow())
    data.execute(
        "UPDATE archive.analysis_jobs SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = :id",
        id=job["id"],
    )

    def moved(s: Samples, name: str, **labels: str) -> float:
        return value(s, name, **labels) - value(before, name, **labels)

    # Both workers tail the log: each of their hubs publishes the job-update.
    after = wait_for(service.url, lambda s: moved(s, f"{P}_live_events_published_total", event="job-update") >= 2)
    assert moved(after, f"{P}_capture_events_logged_total") >= 1
    assert moved(after, f"{P}_capture_lag_seconds_count") >= 1
    lag = moved(after, f"{P}_capture_lag_seconds_sum") / moved(after, f"{P}_capture_lag_seconds_count")
    assert 0 <= lag < 10
    assert moved(after, f"{P}_live_events_published_total", event="job-update") >= 2


def test_connected_clients_are_gauges(service: RunningService, admin_headers: dict[str, str]) -> None:
    assert value(scrape(service.url), f"{P}_sse_clients") == 0
    stream = requests.get(f"{service.url}/admin/jobs/stream", headers=admin_headers, stream=True, timeout=10)
    assert stream.status_code == 200
    next(stream.iter_content(chunk_size=None))
    assert value(wait_for(service.url, lambda s: value(s, f"{P}_sse_clients") == 1), f"{P}_sse_clients") == 1
    stream.close()
    # The worker notices the closed socket at its next write (a heartbeat every 0.5 s).
    assert value(wait_for(service.url, lambda s: value(s, f"{P}_sse_clients") == 0), f"{P}_sse_clients") == 0

    client = socketio.Client(reconnection=False, request_timeout=5)
    client.connect(
        service.url,
        auth={"token": admin_headers["Authorization"][7:]},
        transports=["websocket"],
        socketio_path="admin/socket.io",
        wait_timeout=10,
    )
    try:
        assert value(wait_for(service.url, lambda s: value(s, f"{P}_socketio_clients") == 1), f"{P}_socketio_clients") == 1
    finally:
        client.disconnect()
    assert value(wait_for(service.url, lambda s: value(s, f"{P}_socketio_clients") == 0), f"{P}_socketio_clients") == 0


def test_pool_gauges_sum_the_workers(service: RunningService) -> None:
    samples = scrape(service.url)
    assert value(samples, f"{P}_db_pool_size") == 2 * 4
    assert 0 <= value(samples, f"{P}_db_pool_in_use") <= 8


def test_pool_in_use_follows_checkouts(settings: Settings, engine: Engine) -> None:
    create_app(settings, engine)
    create_app(settings, engine)  # a second app on the same engine must not count twice
    before = metrics.POOL_IN_USE._value.get()
    with engine.connect():
        assert metrics.POOL_IN_USE._value.get() == before + 1
    assert metrics.POOL_IN_USE._value.get() == before


# --- access -----------------------------------------------------------------------------


def test_a_configured_token_is_required(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    with run_service(
        database_url, tmp_path_factory.mktemp("metrics-token"), env={"METRICS_TOKEN": "scrape-secret-123"}
    ) as service:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-secret-123"}):
            response = requests.get(f"{service.url}/metrics", headers=headers, timeout=10)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "UNAUTHORIZED"
        samples = scrape(service.url, headers={"Authorization": "Bearer scrape-secret-123"})
        assert value(samples, f"{P}_db_pool_size") > 0


def test_without_a_token_only_direct_loopback_requests(service: RunningService, settings: Settings, engine: Engine) -> None:
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 200
    forwarded = requests.get(f"{service.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert forwarded.status_code == 403
    assert forwarded.json()["error"]["code"] == "FORBIDDEN"
    client = create_app(settings, engine).test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_can_be_disabled(database_url: str, engine: Engine) -> None:
    app = create_app(make_settings(database_url, env={"METRICS_ENABLED": "false"}), engine)
    response = app.test_client().get("/metrics")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "NOT_FOUND"
