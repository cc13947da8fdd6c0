"""What keeping each Engine.IO session on its worker costs (admin_service/live/socketio/affinity.py).

    python -m bench.affinity [--server-url postgresql://...] [--rounds 3000]

One instance with two gevent workers on a scratch database. Keep-alive connections are told apart
by the worker that accepted them (a handshake on a connection answers with that worker's tag),
then, interleaved, round by round:
- a poll (POST of a PONG packet) to one session on a connection of its own worker (local) and
  on one of the other worker (forwarded over the Unix socket);
- a Socket.IO emit with its ack over a WebSocket that the session's worker accepted (local) and
  over one the other worker accepted and pipes to it (piped).
Prints the medians and tails of each, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import websocket
from sqlalchemy import create_engine

from admin_service.db.fixtures import create_fixture_tables
from tests.support.factories import Data
from tests.support.postgres import scratch_database
from tests.support.service import run_service
from tests.support.tokens import token_for

PATH = "/admin/socket.io/"
TAG = 8  # = affinity.TAG_LENGTH


def exchange(sock: socket.socket, method: str, query: str, body: bytes = b"") -> str:
    """One HTTP/1.1 request on a keep-alive socket, and its body (Content-Length or chunked)."""
    sock.sendall(
        f"{method} {PATH}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    headers = {k.strip().lower(): v.strip() for k, v in fields.items()}
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(rest) < length:
            rest += sock.recv(65536)
        return rest[:length].decode()
    out = b""
    while True:
        while b"\r\n" not in rest:
            rest += sock.recv(65536)
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        if size == 0:
            return out.decode()
        out, rest = out + rest[:size], rest[size + 2 :]


def connection(port: int, *, worker: str | None = None, not_worker: str | None = None) -> tuple[socket.socket, str]:
    """A keep-alive connection accepted by the wanted worker, and the session its handshake opened."""
    while True:
        sock = socket.create_connection(("127.0.0.1", port))
        sid = json.loads(exchange(sock, "GET", "EIO=4&transport=polling")[1:])["sid"]
        if (worker is None or sid[:TAG] == worker) and (not_worker is None or sid[:TAG] != not_worker):
            return sock, sid
        sock.close()


def authenticate(sock: socket.socket, sid: str, token: str) -> None:
    """The Socket.IO CONNECT with the token (a session without one is dropped after
    SOCKETIO_CONNECT_TIMEOUT_S), and its answer."""
    query = f"EIO=4&transport=polling&sid={sid}"
    assert exchange(sock, "POST", query, b"40" + json.dumps({"token": token}).encode()) == "OK"
    assert exchange(sock, "GET", query).startswith("40")


def connected_session(port: int, token: str, worker: str) -> str:
    """A Socket.IO session (CONNECT done) held by `worker`."""
    sock, sid = connection(port, worker=worker)
    authenticate(sock, sid, token)
    sock.close()
    return sid


def poll_ms(sock: socket.socket, sid: str) -> float:
    started = time.perf_counter()
    assert exchange(sock, "POST", f"EIO=4&transport=polling&sid={sid}", b"3") == "OK"
    return (time.perf_counter() - started) * 1000


def upgraded(port: int, sock: socket.socket, sid: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}{PATH}?EIO=4&transport=websocket&sid={sid}", socket=sock, timeout=10)
    ws.send("2probe")
    assert ws.recv() == "3probe"
    ws.send("5")
    return ws


def ack_ms(ws: websocket.WebSocket, n: int) -> float:
    started = time.perf_counter()
    ws.send(f'42{n}["subscribe:alerts"]')
    while not (message := ws.recv()).startswith(f"43{n}"):
        if message == "2":  # the server's ping
            ws.send("3")
    return (time.perf_counter() - started) * 1000


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"{name:>10}: n={len(ordered)} median={statistics.median(ordered):.3f} ms "
        f"p90={ordered[int(0.9 * len(ordered))]:.3f} p99={ordered[int(0.99 * len(ordered))]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server-url",
        default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server: a scratch database is made on it and dropped afterwards",
    )
    parser.add_argument("--rounds", type=int, default=3000, help="measured requests of each kind")
    args = parser.parse_args()
    server = args.server_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    with scratch_database(server, f"bench_affinity_{os.getpid()}") as url:
        engine = create_engine(url)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        token = token_for(Data(engine).user(user_type="admin"))
        # No limit of the measured paths in the way: events per socket, handshakes per address.
        env = {"LOG_LEVEL": "WARNING", "SOCKETIO_EVENTS_PER_SECOND": "10000", "SOCKETIO_HANDSHAKES_PER_MINUTE": "100000"}
        with run_service(url, Path(tempfile.mkdtemp()), workers=2, env=env) as service:
            port = service.port
            on_a, sid_a = connection(port)
            on_b, sid_b = connection(port, not_worker=sid_a[:TAG])
            authenticate(on_a, sid_a, token)
            # Polls: a session of A, on A's connection and on B's.
            polls: dict[str, list[float]] = {"local": [], "forwarded": []}
            for round_ in range(100 + args.rounds):
                local, forwarded = poll_ms(on_a, sid_a), poll_ms(on_b, sid_a)
                if round_ >= 100:  # warm-up
                    polls["local"].append(local)
                    polls["forwarded"].append(forwarded)
            # WebSockets: two sessions of B, one upgraded on B's connection, one on A's (piped).
            worker_b = sid_b[:TAG]
            local_ws = upgraded(port, on_b, connected_session(port, token, worker_b))
            piped_ws = upgraded(port, on_a, connected_session(port, token, worker_b))
            acks: dict[str, list[float]] = {"local": [], "piped": []}
            for n in range(100 + args.rounds):
                local, piped = ack_ms(local_ws, n), ack_ms(piped_ws, n)
                if n >= 100:
                    acks["local"].append(local)
                    acks["piped"].append(piped)
            local_ws.close()
            piped_ws.close()
        engine.dispose()
    print("long-polling POST (PONG packet), one session:")
    for name, values in polls.items():
        print(summary(name, values))
    print(f"  forwarded - local, medians: {statistics.median(polls['forwarded']) - statistics.median(polls['local']):+.3f} ms")
    print("WebSocket emit + ack (subscribe:alerts):")
    for name, values in acks.items():
        print(summary(name, values))
    print(f"  piped - local, medians: {statistics.median(acks['piped']) - statistics.median(acks['local']):+.3f} ms")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
