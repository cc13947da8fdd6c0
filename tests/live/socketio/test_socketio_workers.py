"""Socket.IO long-polling against one instance with two gevent workers, as `serve` starts it.

Consecutive Engine.IO polling requests of one session arrive on whichever worker accepts
their connection, while the session lives in the worker that opened it: each worker forwards
a request for another worker's session to that worker (admin_service/live/socketio/affinity.py).
Without that, about 7 in 10 polling-only connects failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from admin_service import lifecycle
from admin_service.config import Settings
from admin_service.live.socketio import affinity
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.node_socketio import NodeClient, node_client_script
from tests.support.service import RunningService, run_service, self_signed_certificate
from tests.support.socketio import ENV, PATH, Probe, change_status, fresh_job, is_job
from tests.support.tokens import token_for

CONNECTS = 20
# Room for every socket of a test under one admin (the limit is per worker).
WORKERS_ENV = {**ENV, "SOCKETIO_MAX_CONNECTIONS_PER_USER": str(2 * CONNECTS)}


@pytest.fixture(scope="module")
def two_workers(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    with run_service(database_url, tmp_path_factory.mktemp("socketio-workers"), workers=2, env=WORKERS_ENV) as running:
        assert len(running.workers()) == 2
        yield running


@pytest.mark.parametrize(
    ("transports", "expected"),
    [(["polling"], "polling"), (None, "websocket")],
    ids=["polling-only", "polling-then-upgrade"],
)
def test_python_clients_all_connect_and_receive_updates(
    two_workers: RunningService, data: Data, admin: dict[str, Any], transports: list[str] | None, expected: str
) -> None:
    """Polling-only, and python-socketio's default: polling, then the upgrade to WebSocket
    (whose request carries the session id, so it too must reach the session's worker)."""
    token = token_for(admin)
    probes = [Probe(two_workers.url) for _ in range(CONNECTS)]

    def connect(probe: Probe) -> str | None:
        try:
            probe.connect(token, transports=transports)
            assert probe.call("subscribe:jobs") == {"ok": True}
            return None
        except Exception as exc:  # noqa: BLE001  the count of failures is the assertion
            return f"{type(exc).__name__}: {exc}"

    try:
        with ThreadPoolExecutor(5) as pool:
            failures = [f for f in pool.map(connect, probes) if f]
        assert failures == [], f"{len(failures)} of {CONNECTS} connects failed: {failures[:3]}"
        assert [p.sio.transport() for p in probes] == [expected] * CONNECTS
        job = fresh_job(data, status="processing")
        change_status(data, job, "completed")
        for probe in probes:
            assert probe.wait_for("job-update", is_job(job, "completed"), timeout=15)["event"] == "completed"
    finally:
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(Probe.close, probes))


@pytest.mark.parametrize("transports", [["polling"], ["polling", "websocket"]], ids=["polling-only", "polling-then-upgrade"])
def test_node_clients_all_connect_and_receive_updates(
    two_workers: RunningService, data: Data, admin: dict[str, Any], transports: list[str]
) -> None:
    script: Path = node_client_script()
    token = token_for(admin)
    clients = [NodeClient(script, two_workers.url, token, transports) for _ in range(CONNECTS)]
    try:
        for client in clients:
            connected = client.wait_for(lambda r: r["type"] in ("connect", "connect_error"), timeout=15)
            assert connected["type"] == "connect", connected
            # With the upgrade allowed it may be done by then (its request carries the session id too).
            assert connected["transport"] in transports, connected
            assert client.wait_for(lambda r: r["type"] == "ack", timeout=10)["data"] == {"ok": True}
        job = fresh_job(data, status="processing")
        change_status(data, job, "failed")
        for client in clients:
            client.event("job-update", is_job(job, "failed"), timeout=15)
        # Never dropped and reconnected on the way.
        for client in clients:
            assert [r["type"] for r in client.records if r["type"] in ("connect", "disconnect")] == ["connect"]
    finally:
        for client in clients:
            client.close()


def test_the_master_and_the_workers_agree_on_the_socket_folder() -> None:
    assert lifecycle.WORKER_SOCKETS_DIR == affinity.SOCKET_DIR_ENV


@pytest.mark.parametrize(
    "sid",
    ["0badc0deAAAAAAAAAAAAAAAAAAAA", "../../../etc/passwd", "00000000", "not-a-session"],
    ids=["gone-worker", "path", "tag-only", "no-tag"],
)
def test_a_session_no_worker_holds_is_refused_at_once(two_workers: RunningService, sid: str) -> None:
    """A session of a worker that exited (its tag names no listening socket), or an id no worker
    made: Engine.IO's own 400, from whichever worker got it, never a hang or a 500."""
    for method in ("GET", "POST"):
        started = time.monotonic()
        response = requests.request(
            method, f"{two_workers.url}{PATH}/", params={"EIO": "4", "transport": "polling", "sid": sid}, data="3", timeout=10
        )
        assert response.status_code == 400, (method, response.status_code, response.text)
        assert "Invalid session" in response.text
        assert time.monotonic() - started < 5


def test_the_dashboards_own_origin_over_https_is_accepted_on_either_worker(
    database_url: str, two_workers: RunningService, admin: dict[str, Any], tmp_path: Path
) -> None:
    """gunicorn serving TLS itself, and a page of its own origin polling: the forwarded polls
    (plain HTTP on the Unix socket between workers) are judged with the client's https origin."""
    cert, key = self_signed_certificate(tmp_path)
    with run_service(database_url, tmp_path, workers=2, env=WORKERS_ENV, tls=(cert, key)) as service:
        token = token_for(admin)
        trusting = requests.Session()
        trusting.verify = str(cert)
        trusting.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, replaces `verify`
        probes = [Probe(service.url, http_session=trusting) for _ in range(10)]
        try:
            for probe in probes:
                probe.connect(token, transports=["polling"], headers={"Origin": service.url})
                assert probe.call("subscribe:jobs") == {"ok": True}
        finally:
            for probe in probes:
                probe.close()
