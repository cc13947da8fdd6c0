"""Real receivers for alert notifications: an HTTP server (webhooks and Slack) that verifies
signatures and can be switched to refuse, fail or stall, and an SMTP server (aiosmtpd) that
keeps what it receives, parsed."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.service import free_port

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
REPLAY_WINDOW_S = 300


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.time() when it arrived
    signature_ok: bool | None  # None: not signed (Slack)


@dataclass
class Attempt:
    path: str
    at: float
    answered: int  # the status sent, 0 when it stalled past the client's timeout


@dataclass
class HttpReceiver:
    """Answers POSTs per `mode`: ok (200), error (500), slow (sleeps `slow_s`, then 200), and
    `stop()`/`start()` for connection refused. `received` keeps the accepted ones (verified
    signature, fresh timestamp); `attempts` every request that arrived."""

    port: int = field(default_factory=free_port)
    secret: str = WEBHOOK_SECRET
    mode: str = "ok"
    slow_s: float = 5.0
    received: list[Received] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    arrived: list[tuple[str, float]] = field(default_factory=list)  # (X-Delivery-Id, time.time()) as each request came in
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver._handle(self, raw)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Connection refused from now on (the port closed)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        now = time.time()
        with self._lock:
            self.arrived.append((handler.headers.get("X-Delivery-Id", ""), now))
        mode = self.mode
        if mode == "slow":
            time.sleep(self.slow_s)
        status = 500 if mode == "error" else 200
        signed = handler.headers.get("X-Signature")
        ok: bool | None = None
        if signed is not None:
            ok = verify(self.secret, handler.headers.get("X-Signature-Timestamp", ""), raw, signed)
            if not ok:
                status = 401
        with self._lock:
            self.attempts.append(Attempt(handler.path, now, status))
            if status == 200:
                headers = {k: v for k, v in handler.headers.items()}
                self.received.append(Received(handler.path, headers, json.loads(raw), now, ok))
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the sender gave up waiting (slow mode)

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 20, count: int = 1) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [r for r in self.received if predicate(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(found)} of {count} expected messages; all: {self.summary()}")
            time.sleep(0.05)

    def summary(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(r.path, str(r.body.get("kind")), str((r.body.get("alert") or {}).get("type"))) for r in self.received]


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver should do: recompute the HMAC over timestamp + "." + the raw body, compare
    in constant time, and refuse a stale timestamp (a replay)."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW_S:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@contextmanager
def http_receiver(**options: Any) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(**options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


class _Keep:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_receiver() -> Iterator[tuple[int, _Keep]]:
    keep = _Keep()
    port = free_port()
    controller = Controller(keep, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, keep
    finally:
        controller.stop()


def wait_mail(keep: _Keep, count: int = 1, timeout: float = 20) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while len(keep.messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"SMTP server got {len(keep.messages)} of {count} messages")
        time.sleep(0.05)
    return keep.messages


def channels_json(*channels: dict[str, Any], escalation: dict[str, Any] | None = None) -> str:
    doc: dict[str, Any] = {"channels": list(channels)}
    if escalation:
        doc["escalation"] = escalation
    return json.dumps(doc)


def webhook(name: str, receiver: HttpReceiver, **options: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": f"{receiver.url}/{name}", "secret": receiver.secret, **options}


def slack(name: str, receiver: HttpReceiver, **options: Any) -> dict[str, Any]:
    return {"name": name, "type": "slack", "url": f"{receiver.url}/{name}", **options}


def mail(name: str, port: int, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "alerts@example.com",
        "to": ["oncall@example.com"],
        **options,
    }
