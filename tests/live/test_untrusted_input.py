"""The live transports under gunicorn given what REST refuses (issue 18, defects 2 and 10):
correctly signed tokens with absurd claims, and text that cannot be encoded or stored, over SSE
and Socket.IO (python-socketio's client, which writes a lone surrogate as the JSON escape
\\ud800 that the server reads back as one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio

from tests.support.factories import Data
from tests.support.live import wait_until
from tests.support.service import RunningService
from tests.support.tokens import bearer, token_for, token_with
from tests.test_token_claims import REFUSED

pytestmark = pytest.mark.timeout(120)
PATH = "/admin/socket.io"
ABSURD = ["exp 10**400", "exp a numeric string", "exp NaN", "id a lone surrogate", "exp beyond the maximum lifetime from now"]


@pytest.fixture
def admin(data: Data) -> dict[str, Any]:
    return data.user(user_type="admin", email="untrusted-input-admin@example.com")


@pytest.fixture
def clients() -> Iterator[list[socketio.Client]]:
    made: list[socketio.Client] = []
    yield made
    for client in made:
        if client.connected:
            client.disconnect()


def refusal(service: RunningService, token: str, made: list[socketio.Client]) -> Any:
    """Connect with this token and return the connect_error payload (None when none arrived)."""
    client = socketio.Client(reconnection=False, request_timeout=5)
    made.append(client)
    answered = threading.Event()
    said: list[Any] = []

    @client.on("connect_error")
    def _refused(data: Any = None) -> None:
        said.append(data)
        answered.set()

    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(service.url, auth={"token": token}, transports=["websocket"], socketio_path=PATH, wait_timeout=5)
    answered.wait(5)
    return said[0] if said else None


@pytest.mark.parametrize("name", ABSURD)
def test_absurd_claims_are_refused_on_every_transport(
    service: RunningService, admin: dict[str, Any], clients: list[socketio.Client], name: str
) -> None:
    token = token_with(admin["id"], REFUSED[name])
    sse = requests.get(f"{service.url}/admin/jobs/stream", headers=bearer(token), timeout=10, stream=True)
    with sse:
        assert sse.status_code == 401, sse.headers  # (an accepted stream's body never ends)
        assert sse.json()["error"]["code"] == "UNAUTHORIZED"
    said = refusal(service, token, clients)
    assert said == {"message": "Invalid or expired token"}, said
    # The service is still whole: a good token still gets in.
    assert requests.get(f"{service.url}/admin/jobs", headers=bearer(token_for(admin)), timeout=10).status_code == 200


@pytest.mark.parametrize(
    "text",
    ["\ud800", "IQ\udfff", "IQ\x00"],
    ids=["lone high surrogate", "lone low surrogate", "NUL"],
)
def test_socketio_filter_text_that_cannot_be_encoded_or_stored_is_refused_naming_it(
    service: RunningService, admin: dict[str, Any], clients: list[socketio.Client], text: str
) -> None:
    client = socketio.Client(reconnection=False, request_timeout=5)
    clients.append(client)
    errors: list[Any] = []
    client.on("error", errors.append)
    client.connect(service.url, auth={"token": token_for(admin)}, transports=["websocket"], socketio_path=PATH, wait_timeout=5)
    ack = client.call("subscribe:jobs", {"assessment_name": text}, timeout=5)
    assert ack["ok"] is False and ack["error"].startswith("assessment_name:"), ack
    # The socket is fine and still answers; an unencodable event name is named without it.
    client.emit("\ud800:jobs", {"assessment_name": text})
    assert client.call("subscribe:jobs", {"assessment_name": "IQ"}, timeout=5) == {"ok": True}
    wait_until(lambda: any("Unknown event" in e["message"] for e in errors), 5, f"an error event (got {errors})")


def test_sse_filter_text_that_cannot_be_stored_is_a_400(service: RunningService, admin: dict[str, Any]) -> None:
    resp = requests.get(
        f"{service.url}/admin/jobs/stream",
        params={"assessment_name": "IQ\x00"},
        headers=bearer(token_for(admin)),
        timeout=10,
        stream=True,
    )
    with resp:
        assert resp.status_code == 400, resp.headers
        assert [d["field"] for d in resp.json()["error"]["details"]] == ["assessment_name"]
