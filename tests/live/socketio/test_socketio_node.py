"""The Socket.IO endpoint driven by the npm package existing dashboards use (socket.io-client
v4, under Node), with the dashboard's exact options:

    io(URL, {path: '/admin/socket.io', auth: {token}, transports: ['websocket', 'polling']})

tests/live/socketio/node/client.js connects that way (run by tests/support/node_socketio.py; socket.io-client
installed by `make test`), emits subscribe:jobs and prints what it receives as JSON lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.factories import Data
from tests.support.node_socketio import NodeClient, node_client_script
from tests.support.service import RunningService
from tests.support.socketio import change_status, fresh_job
from tests.support.tokens import token_for


@pytest.fixture(scope="module")
def node_client() -> Path:
    return node_client_script()


@pytest.fixture
def clients(node_client: Path, service: RunningService, data: Data) -> Iterator[Callable[[str | None], NodeClient]]:
    started: list[NodeClient] = []

    def start(token: str | None) -> NodeClient:
        client = NodeClient(node_client, service.url, token)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()
    assert requests.get(f"{service.url}/health", timeout=5).status_code == 200


def test_dashboard_client_receives_updates_from_the_database(
    clients: Callable[[str | None], NodeClient], data: Data, admin: dict[str, Any]
) -> None:
    job = fresh_job(data, status="processing", assessment_name="AI-Based IQ Test")
    client = clients(token_for(admin))
    connected = client.wait_for(lambda r: r["type"] == "connect")
    assert connected["transport"] == "websocket"  # the first of the dashboard's transports
    assert client.wait_for(lambda r: r["type"] == "ack")["data"] == {"ok": True}
    stats = client.event("job-stats")
    assert {"overview", "today", "performance", "dailyMetrics"} <= set(stats)

    change_status(data, job, "completed")
    update = client.event("job-update", lambda u: u["job"]["id"] == job["id"] and u["job"]["status"] == "completed")
    assert update["event"] == "completed"
    assert update["job"]["job_id"] == job["job_id"] and update["job"]["assessment_name"] == "AI-Based IQ Test"
    assert update["timestamp"]
    # Subscribed: the periodic stats keep coming (every 500 ms here).
    assert len([r for r in client.records if r.get("name") == "job-stats"]) >= 1
    client.event("job-stats", lambda s: s["overview"]["completed"] == 1)
    assert client.close() == 0
    assert client.records[-1] == {"type": "disconnect", "reason": "io client disconnect"}


@pytest.mark.parametrize(
    ("who", "message"),
    [("nobody", "Authentication required"), ("garbage", "Invalid or expired token"), ("user", "Admin access required")],
)
def test_dashboard_client_sees_why_it_was_refused(
    clients: Callable[[str | None], NodeClient], data: Data, who: str, message: str
) -> None:
    token = {"nobody": None, "garbage": "not.a.token", "user": token_for(data.user(user_type="user"))}[who]
    client = clients(token)
    refused = client.wait_for(lambda r: r["type"] in ("connect", "connect_error"))
    assert refused == {"type": "connect_error", "message": message, "data": None}
    assert client.process.wait(10) == 2
