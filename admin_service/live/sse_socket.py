"""Server-Sent Events written to the client's socket by the publisher itself.

With ten thousand streams on a worker, waking one greenlet per stream per event and passing
each event through werkzeug's and gunicorn's response iteration cost more than the socket
writes themselves. Under gunicorn, once a stream's headers and opening are out (HTTP/1.1: in
chunked transfer coding), the publisher writes each event's chunk to the socket with one
non-blocking write. Only what the kernel does not take at once waits for the stream's
greenlet, which sends it with a blocking send; while anything waits, later events queue
behind it, in order. They count against SUBSCRIBER_QUEUE_MAX, so a client that stops reading
is still dropped as a slow consumer.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

from admin_service import metrics
from admin_service.live.hub import EventFilter, Hub, LiveEvent, Subscriber, http_chunk


class SocketStream(Subscriber):
    def __init__(self, event_filter: EventFilter, maxsize: int) -> None:
        super().__init__(event_filter, maxsize)
        self._fd: int | None = None  # set once the stream writes directly
        self._pending = bytearray()  # accepted, not yet taken by the kernel
        self._pending_events = 0
        self._flushing = False
        self.broken = False  # the client is gone
        self.newest = 0  # ids up to this one were sent already (replay): skipped

    def go_direct(self, fd: int, newest: int) -> None:
        """From now on the publisher writes; events queued before go first, in order."""
        self.newest = newest
        self._fd = fd
        while (event := self.get_nowait()) is not None:
            self.offer(event)

    def offer(self, event: LiveEvent) -> bool:
        if self._fd is None:
            return super().offer(event)
        if event.id is not None and event.id <= self.newest:
            return True
        if self._pending_events >= self.maxsize:
            return False
        if event.id is not None:
            self.newest = event.id
        self.write(event.sse_chunk)
        return True

    def write(self, data: bytes) -> None:
        """Write now if the socket takes it; leave the rest to the stream's greenlet. Never blocks."""
        if self.broken or self._fd is None:
            return
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

    def wait(self, timeout: float) -> bool:
        """Until there is something to do (to send, closed, gone); False on timeout."""
        if self._pending or self.broken or self.closed_reason is not None:
            return True
        self._ready.clear()
        if self._pending or self.broken or self.closed_reason is not None:
            return True
        return self._ready.wait(timeout)

    def flush(self, sock: socket.socket) -> None:
        """Send what waits, blocking this greenlet (the publisher appends behind meanwhile)."""
        self._flushing = True
        try:
            while self._pending:
                data = bytes(self._pending)
                taken = self._pending_events
                self._pending.clear()
                sock.sendall(data)
                # Counted until the kernel has them: a stalled stream holds at most
                # SUBSCRIBER_QUEUE_MAX events before it is dropped, not twice that.
                self._pending_events -= taken
        finally:
            self._flushing = False


def until_next_beat(expires_at: float | None, heartbeat_s: float) -> float:
    """How long a stream may wait for its next event: until its next heartbeat or its token's
    expiry, whichever is first (0 once the token has expired)."""
    if expires_at is None:
        return heartbeat_s
    return max(0.0, min(heartbeat_s, expires_at - time.time()))


def follow_on_socket(
    hub: Hub,
    sub: SocketStream,
    sock: socket.socket,
    opening: bytes,
    newest: int,
    expires_at: float | None,
    heartbeat_s: float,
    ending: dict[str, bytes],
    finished: threading.Event,
) -> Iterator[bytes]:
    """The stream's response body: the opening through gunicorn, then everything directly.
    `ending` holds the final messages: "expired", "slow-consumer" and "shutdown"."""
    metrics.SSE_CLIENTS.inc()
    try:
        yield opening  # gunicorn sends the headers (chunked) and this first chunk
        sub.go_direct(sock.fileno(), newest)
        while True:
            timeout = until_next_beat(expires_at, heartbeat_s)
            if timeout <= 0:
                sub.write(http_chunk(ending["expired"]))
                sub.flush(sock)
                return
            if not sub.wait(timeout):
                sub.write(http_chunk(f": heartbeat {int(time.time())}\n\n".encode()))
            if sub.broken:
                return
            if sub.closed_reason is not None:
                sub.write(http_chunk(ending["slow-consumer" if sub.closed_reason == "slow-consumer" else "shutdown"]))
                sub.flush(sock)
                return
            sub.flush(sock)
    except OSError:
        return  # the client went away (or a stuck one was cut off): nothing more to send
    finally:
        metrics.SSE_CLIENTS.dec()
        finished.set()
        hub.unsubscribe(sub)
