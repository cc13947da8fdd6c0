"""The Socket.IO endpoint driven by the npm package existing dashboards use (socket.io-client
v4, under Node), with the dashboard's exact options:

    io(URL, {path: '/admin/socket.io', auth: {token}, transports: ['websocket', 'polling']})

tests/live/socketio/node/client.js connects that way, emits subscribe:jobs and prints what it receives as
JSON lines. socket.io-client is installed from the npm registry into tests/live/socketio/node/node_modules
(git-ignored) by `make test` (.ci/tools.sh: `npm ci`, the versions tests/live/socketio/node/package-lock.json pins).
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.factories import Data
from tests.support.service import RunningService
from tests.support.socketio import change_status, fresh_job
from tests.support.tokens import token_for

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """tests/live/socketio/node/client.js, with socket.io-client installed next to it (by `make test-tools`)."""
    assert shutil.which("node"), "node is missing: `make test-tools` installs it (Debian's nodejs)"
    package = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
    assert package.is_file(), f"{package.parent} is missing: `make test-tools` installs it (npm ci in {NODE_DIR})"
    installed = json.loads(package.read_text())
    assert installed["version"].startswith("4."), installed["version"]
    return NODE_DIR / "client.js"


class NodeClient:
    """One `node client.js URL TOKEN` process and the JSON lines it prints."""

    def __init__(self, script: Path, url: str, token: str | None) -> None:
        self.process = subprocess.Popen(
            ["node", str(script), url, token or ""],
            cwd=script.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait_for(self, what: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        for record in self.records:
            if what(record):
                return record
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if record is None:
                raise AssertionError(f"the client exited ({self.process.wait()}): {self.records}\n{self.stderr()}")
            self.records.append(record)
            if what(record):
                return record
        raise AssertionError(f"nothing matching within {timeout}s; the client printed: {self.records}")

    def event(self, name: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 10) -> Any:
        return self.wait_for(lambda r: r["type"] == "event" and r["name"] == name and where(r["data"]), timeout)["data"]

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr and self.process.poll() is not None else ""

    def close(self) -> int:
        """Close its stdin (it disconnects and exits), keep what it printed, return its exit code."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        while (record := self._lines.get(timeout=5)) is not None:
            self.records.append(record)
        self._lines.put(None)  # a second close finds the end again
        return code


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
