"""Engine.IO handshakes need no token (it comes in the Socket.IO CONNECT that follows), so the
sessions they open are bounded before authentication: per client address, in number, and in
age. Real handshakes over HTTP against the service under gunicorn; python-socketio's client
for the dashboards that must keep working."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

import pytest
import requests
import socketio
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.metrics import P, scrape, value
from tests.support.service import RunningService, run_service
from tests.support.socketio import ENV
from tests.support.tokens import token_for

PATH = "/admin/socket.io/"
CONNECT_TIMEOUT_S = 1.0
PER_MINUTE = 10
MAX_PENDING = 25
HANDSHAKE_ENV = {
    **ENV,
    "TRUST_PROXY": "true",  # each test's clients come from addresses of their own (X-Forwarded-For)
    "SOCKETIO_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
    "SOCKETIO_HANDSHAKES_PER_MINUTE": str(PER_MINUTE),
    "SOCKETIO_MAX_PENDING": str(MAX_PENDING),
    "LOG_LEVEL": "WARNING",
}
_addresses = count(1)


def new_address() -> str:
    n = next(_addresses)
    return f"198.51.{n // 250}.{n % 250 + 1}"


@pytest.fixture(scope="module")
def service(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    with run_service(database_url, tmp_path_factory.mktemp("handshakes"), workers=1, env=HANDSHAKE_ENV) as running:
        yield running


def handshake(service: RunningService, address: str) -> requests.Response:
    return requests.get(
        f"{service.url}{PATH}",
        params={"EIO": "4", "transport": "polling"},
        headers={"X-Forwarded-For": address},
        timeout=10,
    )


def session_id(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.text.startswith("0"), response.text  # Engine.IO OPEN
    return str(json.loads(response.text[1:])["sid"])


def poll(service: RunningService, sid: str, address: str, timeout: float = 10) -> requests.Response:
    return requests.get(
        f"{service.url}{PATH}",
        params={"EIO": "4", "transport": "polling", "sid": sid},
        headers={"X-Forwarded-For": address},
        timeout=timeout,
    )


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def no_pending(service: RunningService) -> None:
    eventually(lambda: value(scrape(service.url), f"{P}_socketio_pending_sessions") == 0, 10, "sessions left pending")


def assert_refused(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert body["error"]["message"]
    assert int(response.headers["Retry-After"]) >= 1
    return body


def test_a_session_that_never_authenticates_is_closed_and_dropped(service: RunningService) -> None:
    no_pending(service)
    before = scrape(service.url)
    address = new_address()
    silent = session_id(handshake(service, address))
    # One that sends a CONNECT with a bad token: refused, and then on the same deadline.
    refused = session_id(handshake(service, address))
    sent = requests.post(
        f"{service.url}{PATH}",
        params={"EIO": "4", "transport": "polling", "sid": refused},
        data='40{"token":"not-a-token"}',
        headers={"X-Forwarded-For": address},
        timeout=10,
    )
    assert sent.status_code == 200
    assert poll(service, refused, address).text.startswith("44")  # CONNECT_ERROR
    assert value(scrape(service.url), f"{P}_socketio_pending_sessions") == 2

    time.sleep(CONNECT_TIMEOUT_S + 1.5)  # the sweep runs every quarter of the timeout
    for sid in (silent, refused):
        # The session is gone: its next poll is refused (not held open for a ping 20 s later).
        started = time.monotonic()
        response = poll(service, sid, address, timeout=15)
        assert time.monotonic() - started < 5
        assert response.status_code == 400 or response.text.endswith("1"), response.text  # unknown, or CLOSE
    after = scrape(service.url)
    assert value(after, f"{P}_socketio_pending_sessions") == 0
    closed = value(after, f"{P}_socketio_unauthenticated_closed_total") - value(
        before, f"{P}_socketio_unauthenticated_closed_total"
    )
    assert closed == 2


def test_handshakes_per_address_are_limited(service: RunningService) -> None:
    before = scrape(service.url)
    flooding, other = new_address(), new_address()
    for _ in range(PER_MINUTE):
        session_id(handshake(service, flooding))
    body = assert_refused(handshake(service, flooding), 429, "RATE_LIMIT_EXCEEDED")
    assert "handshakes" in body["error"]["message"]
    session_id(handshake(service, other))  # another address is not affected
    refused = value(scrape(service.url), f"{P}_socketio_handshakes_refused_total", reason="rate") - value(
        before, f"{P}_socketio_handshakes_refused_total", reason="rate"
    )
    assert refused == 1
    eventually(lambda: "socket.io handshake refused (rate)" in service.log(), 5, "the refusal was not logged")
    no_pending(service)


def test_sessions_waiting_to_authenticate_are_capped(service: RunningService) -> None:
    no_pending(service)
    before = scrape(service.url)
    for _ in range(MAX_PENDING):
        session_id(handshake(service, new_address()))
    assert_refused(handshake(service, new_address()), 503, "SERVICE_UNAVAILABLE")
    assert (
        value(scrape(service.url), f"{P}_socketio_handshakes_refused_total", reason="capacity")
        - value(before, f"{P}_socketio_handshakes_refused_total", reason="capacity")
        == 1
    )
    # Dropped at their deadline, they make room again.
    no_pending(service)
    session_id(handshake(service, new_address()))
    no_pending(service)


@pytest.mark.parametrize("transports", [None, ["websocket"]], ids=["polling-then-upgrade", "websocket"])
def test_dashboards_with_a_token_connect_and_stay(service: RunningService, data: Data, transports: list[str] | None) -> None:
    admin = data.user(user_type="admin", email=f"handshake-{uuid.uuid4().hex[:6]}@example.com")
    client = socketio.Client(reconnection=False, request_timeout=5)
    stats = threading.Event()
    client.on("job-stats", lambda *_: stats.set())
    client.connect(
        service.url,
        auth={"token": token_for(admin)},
        transports=transports,
        socketio_path=PATH,
        headers={"X-Forwarded-For": new_address()},
        wait_timeout=10,
    )
    try:
        assert stats.wait(10), "no job-stats after connecting"
        time.sleep(CONNECT_TIMEOUT_S * 3)  # well past the deadline of an unauthenticated session
        assert client.connected
        assert client.call("subscribe:jobs", {}, timeout=5) == {"ok": True}
        assert value(scrape(service.url), f"{P}_socketio_pending_sessions") == 0
    finally:
        client.disconnect()
