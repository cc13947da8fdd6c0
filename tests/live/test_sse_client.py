"""The test client itself (tests/support/sse_client.py), on a hand-written stream."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support.sse_client import SSEClient, StreamEnded


def test_sse_client_parses_by_the_whatwg_rules() -> None:
    """The test client itself, on a hand-written stream (CRLF/CR/LF, multi-line data, comments)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    body = (
        "\ufeff: hello\r\nretry: 1500\r\nretry: soon\n\n"
        'id: 7\revent: job-update\rdata: {"a":\rdata: 1}\r\r'
        "data:no-space\n\n"
        "id\nevent: x\n\n"
        "data: tail without blank line"
    ).encode()

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):  # tiny chunks split lines, CRLFs and UTF-8 anywhere
            piece = body[i : i + 7]
            conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            time.sleep(0.001)
        conn.sendall(b"0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with SSEClient(f"http://127.0.0.1:{server.getsockname()[1]}", "/") as client:
        first = client.next_event(5)
        second = client.next_event(5)
        with pytest.raises(StreamEnded):
            client.next_event(5)
    server.close()
    assert client.comments == ["hello"]
    assert client.retries == [1500]
    assert (first.name, first.id, first.raw, first.data, first.retry) == ("job-update", "7", '{"a":\n1}', {"a": 1}, 1500)
    assert (second.name, second.id, second.last_event_id) == ("message", None, "7")
    assert second.raw == "no-space"
    assert len(client.events) == 2, "an event without data, or without its blank line, is not dispatched"
