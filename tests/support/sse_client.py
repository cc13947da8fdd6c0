"""A small EventSource-style client for tests: one real streaming HTTP connection, parsed
by the WHATWG rules (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Reading happens on demand with a deadline, so a test never hangs on a silent stream:
`next_event(timeout)` raises `StreamTimeout`, and `StreamEnded` once the server closed.
Every parsed event is also kept in `events`, with the time it arrived.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit


class StreamTimeout(AssertionError):
    """Nothing (or not the wanted event) arrived in time."""


class StreamEnded(AssertionError):
    """The server closed the stream."""


@dataclass
class SSEEvent:
    name: str  # the `event:` field, "message" when absent (as EventSource dispatches it)
    raw: str  # the joined `data:` lines
    id: str | None  # the `id:` field of this event block, None when the block had none
    last_event_id: str  # what EventSource would report as lastEventId (sticky across events)
    retry: int | None = None  # the reconnection time known when this event was dispatched
    received_at: float = field(default=0.0, compare=False)  # time.monotonic() at dispatch

    @property
    def data(self) -> Any:
        return json.loads(self.raw)

    @property
    def int_id(self) -> int:
        assert self.id is not None, f"{self.name} event without an id"
        return int(self.id)


class SSEClient:
    """GET a text/event-stream over HTTP/1.1 on a plain socket, and parse it.

    A plain socket (not http.client) because a read timeout must leave the connection
    usable: http.client's file object refuses every read after one timeout. Non-200
    answers are not an error here: `status` and `body` say what came back.
    """

    def __init__(
        self,
        base_url: str,
        path: str = "/admin/jobs/stream",
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        last_event_id: str | int | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        if parts.scheme == "https":
            self.sock = (tls or ssl.create_default_context()).wrap_socket(self.sock, server_hostname=host)
        query = f"?{urlencode(params)}" if params else ""
        send = {
            "Host": f"{host}:{port}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            **(headers or {}),
        }
        if token is not None:
            send["Authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            send["Last-Event-ID"] = str(last_event_id)
        request = f"GET {path}{query} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in send.items()) + "\r\n"
        self.sock.sendall(request.encode())
        self.events: list[SSEEvent] = []  # every dispatched event, in order
        self.comments: list[str] = []  # comment lines, without the leading ':' (and one space)
        self.retry: int | None = None  # the last valid `retry:` value
        self.retries: list[int] = []  # every valid `retry:` value, in order
        self.ended = False
        self.body = b""
        self._raw = b""  # received bytes not yet decoded (HTTP framing)
        self._chunked = False
        self._length: int | None = None  # Content-Length, when not chunked
        self._chunk_left = 0  # body bytes left in the current chunk
        self._pending: list[SSEEvent] = []  # dispatched, not yet returned by next_event
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # decoded text not yet split into lines
        self._first_text = True
        self._event_type = ""
        self._data: list[str] = []
        self._block_id: str | None = None
        self._last_event_id = ""
        self._read_head(connect_timeout)
        if self.status != 200:
            self._read_whole_body(connect_timeout)
        else:
            self._parse(self._unframe(None))  # body bytes that came with the head

    # -- public API --------------------------------------------------------------------
    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def heartbeats(self) -> list[str]:
        """The heartbeat comments seen (`: heartbeat <unix time>`)."""
        return [c for c in self.comments if c.startswith("heartbeat")]

    @property
    def last_event_id(self) -> str:
        """What EventSource would send as Last-Event-ID on reconnecting ("" before any id)."""
        return self._last_event_id

    def json_body(self) -> Any:
        return json.loads(self.body)

    def fileno(self) -> int:
        """The socket's, so that one thread can wait for many clients with `selectors`."""
        return self.sock.fileno()

    def pump(self, timeout: float = 0.0) -> list[SSEEvent]:
        """Read once (what arrives within timeout) and parse; the events this dispatched.

        For callers that multiplex many clients: the events are not kept for next_event()
        (they stay in `events`)."""
        if not self.ended:
            self._pump(timeout)
        got, self._pending = self._pending, []
        return got

    def next_event(self, timeout: float = 5.0) -> SSEEvent:
        """The next dispatched event; StreamTimeout if none within timeout, StreamEnded at the end."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            if self.ended:
                raise StreamEnded("the stream ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamTimeout(f"no event within {timeout}s")
            self._pump(left)
        return self._pending.pop(0)

    def wait_for(self, predicate: Callable[[SSEEvent], bool], timeout: float = 5.0, what: str = "event") -> SSEEvent:
        """Skip events until one satisfies predicate (the skipped ones stay in `events`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise StreamTimeout("")
                event = self.next_event(left)
            except StreamTimeout:
                raise StreamTimeout(f"no {what} within {timeout}s; got {[(e.name, e.id) for e in self.events]}") from None
            if predicate(event):
                return event

    def collect(self, duration: float) -> list[SSEEvent]:
        """Every event dispatched within `duration` seconds (stops early if the stream ends)."""
        got: list[SSEEvent] = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(self.next_event(left))
            except (StreamTimeout, StreamEnded):
                return got

    def wait_ended(self, timeout: float) -> list[SSEEvent]:
        """Read until the server closes the stream; the events that came meanwhile."""
        got: list[SSEEvent] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamTimeout(f"the stream did not end within {timeout}s")
            try:
                got.append(self.next_event(left))
            except StreamTimeout:
                continue
            except StreamEnded:
                return got

    def close(self) -> None:
        self.ended = True
        self.sock.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------
    def _recv(self, timeout: float) -> bytes | None:
        """Some bytes; b"" when the peer closed; None on timeout (the socket stays usable)."""
        self.sock.settimeout(max(timeout, 0.01))
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _read_head(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._raw:
            left = deadline - time.monotonic()
            got = self._recv(left) if left > 0 else None
            if not got:
                raise (
                    StreamTimeout(f"no response head within {timeout}s")
                    if got is None
                    else StreamEnded("closed before a response")
                )
            self._raw += got
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            self._length = int(self.headers["content-length"])
            self.ended = self._length == 0

    def _read_whole_body(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        body = bytearray(self._unframe(None))  # what came with the head
        while not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamTimeout("the error body did not arrive")
            body += self._unframe(self._recv(left))
        self.body = bytes(body)

    def _unframe(self, got: bytes | None) -> bytes:
        """Body bytes out of newly received bytes (None: nothing yet; b"": the peer closed)."""
        if got == b"":
            self.ended = True
            self.sock.close()
        elif got:
            self._raw += got
        out = bytearray()
        if not self._chunked:
            out += self._raw
            self._raw = b""
            if self._length is not None:
                self._length -= len(out)
                if self._length <= 0:
                    self.ended = True
            return bytes(out)
        while self._raw:
            if self._chunk_left:
                take = self._raw[: self._chunk_left]
                out += take
                self._raw = self._raw[len(take) :]
                self._chunk_left -= len(take)
                continue
            if self._raw.startswith(b"\r\n"):  # the CRLF after a chunk's data
                self._raw = self._raw[2:]
                continue
            if b"\r\n" not in self._raw:
                break  # half a chunk-size line: wait for the rest
            size_line, self._raw = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.ended = True  # the last chunk
                self._raw = b""
                break
            self._chunk_left = size
        return bytes(out)

    # -- SSE parsing ---------------------------------------------------------------------
    def _pump(self, timeout: float) -> None:
        self._parse(self._unframe(self._recv(timeout)))

    def _parse(self, body: bytes) -> None:
        text = self._decoder.decode(body, final=self.ended)
        if self._first_text and text:
            self._first_text = False
            text = text.removeprefix("\ufeff")  # one leading BOM is ignored
        self._text += text
        self._lines()
        if self.ended:
            self.sock.close()

    def _lines(self) -> None:
        while True:
            match = LINE_END.search(self._text)
            if match is None:
                return
            if match.group() == "\r" and match.end() == len(self._text) and not self.ended:
                return  # a CR at the end may be half of a CRLF: wait for more
            line, self._text = self._text[: match.start()], self._text[match.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_event_id = value
                self._block_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
                self.retries.append(self.retry)
        # any other field is ignored, as the spec says

    def _dispatch(self) -> None:
        event_type, data, block_id = self._event_type, self._data, self._block_id
        self._event_type, self._data, self._block_id = "", [], None
        if not data:
            return  # an event without data is not dispatched (its id still counted, above)
        event = SSEEvent(
            name=event_type or "message",
            raw="\n".join(data),
            id=block_id,
            last_event_id=self._last_event_id,
            retry=self.retry,
            received_at=time.monotonic(),
        )
        self.events.append(event)
        self._pending.append(event)


LINE_END = re.compile(r"\r\n|\r|\n")
