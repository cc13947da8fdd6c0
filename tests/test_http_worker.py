"""The HTTP level, below Flask, under gunicorn with real sockets: a deadline for request heads
(slow clients must not hold connections), and gunicorn's own refusals in the error envelope."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from admin_service.config import ConfigError, Settings
from admin_service.http_worker import head_timeout_s
from tests.support.event_log import reset_event_log
from tests.support.metrics import P, scrape, value
from tests.support.service import RunningService, run_service

HEAD_S = 2.0
SLACK_S = 15.0  # a loaded machine (failed once at 4 s); without the deadline they would wait for ever


@pytest.fixture(scope="module")
def service(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    env = {"REQUEST_HEAD_TIMEOUT_S": str(HEAD_S), "LOG_LEVEL": "WARNING"}
    with run_service(database_url, tmp_path_factory.mktemp("http-worker"), workers=1, env=env) as running:
        yield running


def connect(service: RunningService) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length (what the service and gunicorn send here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends until it closes the connection, which it must do within `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s (received {received!r})")
    return received


def assert_envelope(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> dict[str, Any]:
    assert status == expected, body
    assert headers["content-type"] == "application/json", (headers, body)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    envelope = json.loads(body)
    assert envelope["success"] is False
    assert envelope["error"]["code"] == code
    assert envelope["error"]["message"]
    assert set(envelope) == {"success", "error", "timestamp"}
    return envelope


# --- the request head deadline ------------------------------------------------------------------


def test_a_trickled_request_head_gets_408_and_is_closed(service: RunningService) -> None:
    before = scrape(service.url)
    with connect(service) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # A header line every half second: always "making progress", never done.
        sock.settimeout(0.5)
        answer = b""
        while time.monotonic() - started < HEAD_S + SLACK_S:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            pytest.fail(f"a trickling client held its connection for {HEAD_S + SLACK_S} s")
        assert HEAD_S - 0.5 <= time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    assert_envelope(int(status_line.split()[1]), headers, body, 408, "REQUEST_TIMEOUT")
    moved = value(scrape(service.url), f"{P}_http_request_head_timeouts_total") - value(
        before, f"{P}_http_request_head_timeouts_total"
    )
    assert moved == 1


def test_a_connection_that_sends_nothing_is_closed(service: RunningService) -> None:
    with connect(service) as sock:
        started = time.monotonic()
        assert closed_within(sock, HEAD_S + SLACK_S) == b""  # nothing was asked: nothing answered
        assert time.monotonic() - started >= HEAD_S - 0.5


def test_many_slow_clients_do_not_starve_the_others(service: RunningService) -> None:
    slow = [connect(service) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        with connect(service) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _ = read_answer(sock)
            assert status == 200
        deadline = time.monotonic() + HEAD_S + SLACK_S
        for sock in slow:
            answer = closed_within(sock, max(0.1, deadline - time.monotonic()))
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    finally:
        for sock in slow:
            sock.close()


def test_a_kept_alive_connection_may_idle_past_the_head_deadline(service: RunningService) -> None:
    """Idle between requests is `keepalive` (75 s), not the head deadline: balancers reuse
    connections after idling for up to their own timeout."""
    with connect(service) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, _ = read_answer(sock)
            assert status == 200
            assert headers.get("connection", "keep-alive").lower() != "close"
            time.sleep(HEAD_S + 1.5)


def test_the_setting_is_checked() -> None:
    assert head_timeout_s({}) == 10
    assert head_timeout_s({"REQUEST_HEAD_TIMEOUT_S": "2.5"}) == 2.5
    for bad in ("0", "abc", "100000"):
        with pytest.raises(ConfigError, match="REQUEST_HEAD_TIMEOUT_S"):
            head_timeout_s({"REQUEST_HEAD_TIMEOUT_S": bad})


# --- gunicorn's own answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI_TOO_LONG"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431, "HEADERS_TOO_LARGE"),
        (b"GARBAGE\r\n\r\n", 400, "BAD_REQUEST"),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400, "BAD_REQUEST"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "BAD_REQUEST"),
    ],
    ids=["request-line-too-long", "header-too-large", "no-request-line", "lower-case-method", "http-version", "header-name"],
)
def test_gunicorns_refusals_are_in_the_envelope(service: RunningService, request_bytes: bytes, status: int, code: str) -> None:
    with connect(service) as sock:
        sock.sendall(request_bytes)
        answer = closed_within(sock, 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(body)
    envelope = assert_envelope(int(status_line.split()[1]), headers, body, status, code)
    assert len(envelope["error"]["message"]) <= 200
