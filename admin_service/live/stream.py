"""One Server-Sent Events stream: its subscription, its lifecycle and its wire format.

`SseStream` owns what every stream does, whatever carries its bytes: the opening first,
then events, skipping those the replay already sent (ids up to `newest`); a heartbeat
comment when idle; an ending by CloseReason (TOKEN_EXPIRED / ACCESS_REVOKED / SLOW_CONSUMER `error` events,
a short `retry:` hint on shutdown); SSE_CLIENTS and the unsubscribe in a `finally`; and,
for a client dropped as too slow, a cut-off of its socket SLOW_CONSUMER_GRACE_S later.

The two writers are its subclasses, not objects behind it: the publisher calls a
subscriber's `offer` for every event, and the direct writer has to be that offer rather
than one more call per subscriber and event.

- `YieldedStream`: events wait in the subscriber's queue and the response body yields them
  through the WSGI server (tests' client, dev server, TLS sockets, HEAD, HTTP/1.0). Whatever
  is queued when the stream wakes goes out in one write (up to MAX_BATCH events).
- `SocketStream`: with ten thousand streams on a worker, waking one greenlet per stream per
  event and passing each event through werkzeug's and gunicorn's response iteration cost
  more than the socket writes themselves. So under gunicorn, once a stream's headers and
  opening are out (HTTP/1.1: in chunked transfer coding), the publisher writes each event's
  chunk to the socket with one non-blocking write. Only what the kernel does not take at
  once waits for the stream's greenlet, which sends it with a blocking send; while anything
  waits, later events queue behind it, in order. They count against SUBSCRIBER_QUEUE_MAX,
  so a client that stops reading is still dropped as a slow consumer.

Encodings are made once per event and kept in the event's `encoded` slot (see LiveEvent).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from functools import cache
from typing import Any

from admin_service import metrics
from admin_service.live.hub import STOP, CloseReason, EventFilter, Hub, LiveEvent, Subscriber

# A dropped slow subscriber gets this long to take its `error` event and end by itself.
SLOW_CONSUMER_GRACE_S = 2.0
# At most this many queued events are joined into one write.
MAX_BATCH = 200

# Keys of LiveEvent.encoded.
_MESSAGE = "sse"
_CHUNK = "sse-chunk"


# --- the wire format ---------------------------------------------------------------------


def sse_message(event: LiveEvent) -> bytes:
    """The event as one Server-Sent Events message (`id:` for logged events)."""
    try:
        return event.encoded[_MESSAGE]
    except KeyError:
        head = f"id: {event.id}\nevent: {event.name}\n" if event.id is not None else f"event: {event.name}\n"
        encoded = event.encoded[_MESSAGE] = f"{head}data: {event.json_text}\n\n".encode()
        return encoded


def sse_chunk(event: LiveEvent) -> bytes:
    """That message as one chunk of HTTP/1.1 chunked transfer coding (SocketStream)."""
    try:
        return event.encoded[_CHUNK]
    except KeyError:
        encoded = event.encoded[_CHUNK] = http_chunk(sse_message(event))
        return encoded


def message(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """A message that is not a published event (the opening's job-stats, `reset`, endings)."""
    return sse_message(LiveEvent(name, data, event_id))


def http_chunk(payload: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(payload), payload)


def opening_line(retry_ms: int) -> bytes:
    return f"retry: {retry_ms}\n: connected\n\n".encode()


def id_line(event_id: int) -> bytes:
    """An id without data: sets EventSource's lastEventId."""
    return f"id: {event_id}\n\n".encode()


def heartbeat() -> bytes:
    return f": heartbeat {int(time.time())}\n\n".encode()


@cache
def endings(retry_ms: int) -> Mapping[CloseReason, bytes]:
    """The last message of a stream, by why it ends."""
    return {
        CloseReason.EXPIRED: message("error", {"code": "TOKEN_EXPIRED", "message": "Token expired; reconnect with a new token"}),
        CloseReason.REVOKED: message(
            "error", {"code": "ACCESS_REVOKED", "message": "Access revoked: the user is no longer an active admin"}
        ),
        CloseReason.SLOW_CONSUMER: message(
            "error", {"code": "SLOW_CONSUMER", "message": "Too slow to keep up; reconnect with Last-Event-ID"}
        ),
        CloseReason.SHUTDOWN: f"retry: {min(retry_ms, 1000)}\n: server shutting down, reconnect\n\n".encode(),
    }


def until_next_beat(expires_at: float | None, heartbeat_s: float) -> float:
    """How long a stream may wait for its next event: until its next heartbeat or its token's
    expiry, whichever is first (0 once the token has expired)."""
    if expires_at is None:
        return heartbeat_s
    return max(0.0, min(heartbeat_s, expires_at - time.time()))


# --- the stream ----------------------------------------------------------------------------


def open_stream(hub: Hub, event_filter: EventFilter, environ: Mapping[str, Any]) -> SseStream:
    """A stream for this request, already subscribed: subscribe before reading the log, so
    events arriving meanwhile wait in its queue (the replay's overlap is skipped later)."""
    client_socket: socket.socket | None = environ.get("gunicorn.socket")
    stream: SseStream
    # Under gunicorn, with HTTP/1.1 chunked coding for the body, the publisher writes to the
    # socket itself. gunicorn serving TLS itself hands over a TLS socket: its bytes must go
    # through the TLS layer, never straight to the descriptor.
    if (
        client_socket is not None
        and not hasattr(client_socket, "getpeercert")
        and str(environ.get("REQUEST_METHOD", "")).upper() == "GET"
        and environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
    ):
        stream = SocketStream(hub, event_filter, client_socket)
    else:
        stream = YieldedStream(hub, event_filter, client_socket)
    return hub.attach(stream)


class SseStream(Subscriber):
    """A stream's subscription and lifecycle; a subclass says how its bytes go out."""

    broken = False  # the client is gone (noticed by the direct writer)
    # When the stream last sent something (monotonic): a heartbeat goes only after
    # SSE_HEARTBEAT_S of silence. While events flow they keep the connection alive and find a
    # dead client themselves; a heartbeat besides them on every stream (ten thousand writes every
    # interval) only lengthened the event fan-outs it ran into.
    last_sent = 0.0

    def __init__(self, hub: Hub, event_filter: EventFilter, client_socket: socket.socket | None) -> None:
        super().__init__(event_filter, hub.queue_max)
        self._hub = hub
        self._socket = client_socket  # gunicorn's, for the cut-off; None elsewhere
        self.newest = 0  # ids up to this one were sent already (the replay): skipped
        self._finished = False

    def body(
        self, opening: bytes, newest: int, *, expires_at: float | None, heartbeat_s: float, retry_ms: int
    ) -> Iterator[bytes]:
        """The response body: `opening`, then live events after `newest`, heartbeats, the
        ending. Runs after the view returned: no request or app context here."""
        ending = endings(retry_ms)
        metrics.SSE_CLIENTS.inc()
        try:
            self.newest = newest
            yield opening  # (SocketStream: gunicorn sends the headers, chunked, and this first chunk)
            self.last_sent = time.monotonic()
            self._start()
            while True:
                quiet_s = time.monotonic() - self.last_sent
                timeout = until_next_beat(expires_at, max(0.001, heartbeat_s - quiet_s))
                if timeout <= 0:
                    reason = CloseReason.EXPIRED
                    break
                if not self._wait(timeout) and time.monotonic() - self.last_sent >= heartbeat_s:
                    self._send(heartbeat())
                if self.broken:
                    return
                if self.closed_reason is not None:
                    reason = self.closed_reason
                    break
                if out := self._flush():
                    yield out
                    self.last_sent = time.monotonic()
            self._send(ending[reason])
            if out := self._flush():
                yield out
        except OSError:
            return  # the client went away (or a stuck one was cut off): nothing more to send
        finally:
            metrics.SSE_CLIENTS.dec()
            self._finished = True
            self._hub.unsubscribe(self)

    def _fresh(self, event: LiveEvent) -> bool:
        """False for an event the replay sent already; remembers the newest id sent."""
        event_id = event.id
        if event_id is None:
            return True
        if event_id <= self.newest:
            return False
        self.newest = event_id
        return True

    def after_close(self) -> None:
        # A client that stopped reading leaves the stream blocked in a socket write that has no
        # timeout, so it would never see its STOP: after a grace period shut the socket down,
        # which fails that write and ends the request.
        if self.closed_reason is CloseReason.SLOW_CONSUMER and self._socket is not None:
            timer = threading.Timer(SLOW_CONSUMER_GRACE_S, self._cut_off)
            timer.daemon = True
            timer.start()

    def _cut_off(self) -> None:
        sock = self._socket
        if self._finished or sock is None:
            return
        # Through a duplicate: shutting the original down under gevent cancels the blocked
        # write with EBADF, which gunicorn logs as an error; this way it fails with EPIPE.
        with suppress(OSError), socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
            dup.shutdown(socket.SHUT_RDWR)

    # -- the writer ---------------------------------------------------------------------------
    def _start(self) -> None:
        """The opening is out: live events may go now."""

    def _wait(self, timeout: float) -> bool:
        """Until there is something to send or the stream must end; False on timeout."""
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        """Queue (or write) a message of the stream's own: heartbeat, ending."""
        raise NotImplementedError

    def _flush(self) -> bytes:
        """Send what waits; what the response body must yield (b"" when nothing)."""
        raise NotImplementedError


class YieldedStream(SseStream):
    """Events wait in the queue; the body yields them through the WSGI server."""

    def __init__(self, hub: Hub, event_filter: EventFilter, client_socket: socket.socket | None) -> None:
        super().__init__(hub, event_filter, client_socket)
        self._out: list[bytes] = []

    def _wait(self, timeout: float) -> bool:
        event = self.get(timeout)
        if event is None:
            return False
        # Everything already queued goes out in one write: a burst costs one send per
        # client, not one per event.
        out = self._out
        while event is not None and event is not STOP:
            if self._fresh(event):
                out.append(sse_message(event))
                if len(out) >= MAX_BATCH:
                    break
            event = self.get_nowait()
        return True

    def _send(self, data: bytes) -> None:
        self._out.append(data)

    def _flush(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)


class SocketStream(SseStream):
    """The publisher writes each event to gunicorn's socket; the stream's greenlet sends the rest."""

    def __init__(self, hub: Hub, event_filter: EventFilter, client_socket: socket.socket) -> None:
        super().__init__(hub, event_filter, client_socket)
        self._sock = client_socket
        self._fd: int | None = None  # set once the stream writes directly
        self._pending = bytearray()  # accepted, not yet taken by the kernel
        self._pending_events = 0
        self._flushing = False

    def _start(self) -> None:
        """From now on the publisher writes; events queued before go first, in order."""
        self._fd = self._sock.fileno()
        while (event := self.get_nowait()) is not None:
            self.offer(event)

    def offer(self, event: LiveEvent) -> bool:
        if self._fd is None:
            return super().offer(event)
        if self._pending_events >= self.maxsize:
            return False
        if self._fresh(event):
            self.write(sse_chunk(event))
        return True

    def write(self, data: bytes) -> None:
        """Write now if the socket takes it; leave the rest to the stream's greenlet. Never blocks."""
        if self.broken or self._fd is None:
            return
        self.last_sent = time.monotonic()
        if not (self._pending or self._flushing):
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                self._ready.set()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._pending += data
        self._pending_events += 1
        self._ready.set()

    def _wait(self, timeout: float) -> bool:
        if self._pending or self.broken or self.closed_reason is not None:
            return True
        self._ready.clear()
        if self._pending or self.broken or self.closed_reason is not None:
            return True
        return self._ready.wait(timeout)

    def _send(self, data: bytes) -> None:
        self.write(http_chunk(data))

    def _flush(self) -> bytes:
        """Send what waits, blocking this greenlet (the publisher appends behind meanwhile)."""
        self._flushing = True
        try:
            while self._pending:
                data = bytes(self._pending)
                taken = self._pending_events
                self._pending.clear()
                self._sock.sendall(data)
                # Counted until the kernel has them: a stalled stream holds at most
                # SUBSCRIBER_QUEUE_MAX events before it is dropped, not twice that.
                self._pending_events -= taken
        finally:
            self._flushing = False
        return b""
