"""Socket.IO figures for the notes: connect time, commit-to-client latency with many sockets,
and the worker's memory per idle socket. Slow (about a minute): not part of the test suite.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/socketio_measure.py

Runs the service as production does (gunicorn, one gevent worker) on a private database it
creates on that server and drops afterwards. Clients are python-socketio's, on this machine,
so latencies include their thread scheduling too. Measures:
- connect: time for `connect()` to return (Engine.IO handshake + Socket.IO CONNECT with auth),
  per transport, sequential;
- latency: UPDATE committed -> job-update received, on N websocket sockets, with the default
  capture polling (CAPTURE_POLL_MS=500) and then with the opt-in NOTIFY trigger; clients are
  socket.io-client in one Node process (bench/socketio_clients.js, needs tests/node's
  node_modules: cd tests/node && npm install) and, for comparison, python-socketio's (a thread
  pair per socket in this process, which adds its own delay at 200 sockets);
- memory: VmRSS of the gunicorn worker with 0 and with M idle sockets connected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import socketio
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_service.db.archive_options import notify_trigger_ddl, run_ddl  # noqa: E402
from admin_service.db.engine import make_engine, sqlalchemy_url  # noqa: E402
from admin_service.db.fixtures import create_fixture_tables  # noqa: E402
from admin_service.db.migrations import upgrade  # noqa: E402
from tests.conftest import RunningService, make_settings, run_service, scratch_database, token_for  # noqa: E402
from tests.factories import Data  # noqa: E402

PATH = "/admin/socket.io"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float], unit: float = 1000.0) -> str:
    """p50/p95/p99/max in milliseconds."""
    ms = [v * unit for v in values]
    return f"p50 {percentile(ms, 0.5):7.1f}  p95 {percentile(ms, 0.95):7.1f}  p99 {percentile(ms, 0.99):7.1f}  max {max(ms):7.1f} ms  (n={len(ms)})"


def worker_rss_kib(service: RunningService) -> int:
    pid = service.process.pid
    (worker,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Listener:
    """A socket that notes when each job-update arrives (time.time(), same clock as the writer)."""

    def __init__(self, url: str, token: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.sio = socketio.Client(reconnection=False, request_timeout=10)
        self.sio.on("job-update", self._update)
        self.url, self.token = url, token

    def _update(self, data: dict[str, Any]) -> None:
        self.arrivals.setdefault(data["job"]["id"], time.time())

    def start(self, subscribe: bool = True) -> None:
        self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], socketio_path=PATH, wait_timeout=30)
        if subscribe:
            assert self.sio.call("subscribe:jobs", timeout=10) == {"ok": True}

    def stop(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


def measure_connect(url: str, token: str, rounds: int) -> None:
    print(f"\nconnect time, {rounds} sequential connects per transport (connect() returning):")
    for label, transports in (("websocket", ["websocket"]), ("polling", ["polling"]), ("polling+upgrade", None)):
        times = []
        for _ in range(rounds):
            client = socketio.Client(reconnection=False)
            started = time.perf_counter()
            client.connect(url, auth={"token": token}, transports=transports, socketio_path=PATH, wait_timeout=10)
            times.append(time.perf_counter() - started)
            client.disconnect()
        print(f"  {label:16s} {summary(times)}")


def commit_updates(data: Data, updates: int) -> dict[str, float]:
    """Change `updates` jobs one commit at a time; return each job's commit time."""
    jobs = [data.job(status="processing") for _ in range(updates)]
    committed: dict[str, float] = {}
    for job in jobs:
        data.execute("UPDATE archive.analysis_jobs SET status = 'completed', updated_at = now() WHERE id = :id", id=job["id"])
        committed[job["id"]] = time.time()
        time.sleep(0.237)  # not a multiple of the poll interval: commits land all over it
    return committed


def report(label: str, latencies: list[float], expected: int) -> None:
    missing = expected - len(latencies)
    print(f"  {label:46s} {summary(latencies)}{f'  MISSING {missing}' if missing else ''}")


def measure_latency(url: str, tokens: list[str], data: Data, updates: int, label: str) -> None:
    """python-socketio clients: one thread pair each in this process, so they add their own delay."""
    listeners = [Listener(url, t) for t in tokens]
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(Listener.start, listeners))
    committed = commit_updates(data, updates)
    deadline = time.time() + 15
    while time.time() < deadline and any(len(ls.arrivals) < updates for ls in listeners):
        time.sleep(0.1)
    latencies = [ls.arrivals[j] - committed[j] for ls in listeners for j in committed if j in ls.arrivals]
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(Listener.stop, listeners))
    report(label, latencies, len(listeners) * updates)


def measure_latency_node(url: str, token: str, sockets: int, data: Data, updates: int, label: str) -> None:
    """socket.io-client sockets in one Node process (bench/socketio_clients.js): cheap clients."""
    node = subprocess.Popen(
        ["node", str(ROOT / "bench" / "socketio_clients.js"), url, token, str(sockets)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert node.stdout is not None and node.stdin is not None
    assert "ready" in node.stdout.readline(), "the Node clients did not all connect"
    arrivals: list[dict[str, Any]] = []

    def read() -> None:
        for line in node.stdout:  # type: ignore[union-attr]
            arrivals.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    committed = commit_updates(data, updates)
    deadline = time.time() + 15
    while time.time() < deadline and len(arrivals) < sockets * updates:
        time.sleep(0.1)
    node.stdin.close()
    node.wait(10)
    latencies = [a["at"] - committed[a["job"]] for a in arrivals if a["job"] in committed]
    report(label, latencies, sockets * updates)


def measure_memory(service: RunningService, url: str, tokens: list[str]) -> None:
    warm_up = Listener(url, tokens[0])  # the first socket loads what sockets need: not per-socket cost
    warm_up.start()
    warm_up.stop()
    time.sleep(2)
    idle_before = worker_rss_kib(service)
    n = len(tokens)
    print(f"\nworker memory (VmRSS), {n} idle websocket sockets (connected 50 at a time), twice:")
    print(f"  0 sockets: {idle_before / 1024:.1f} MiB")
    for round_ in (1, 2):  # a second round shows whether what the first left behind is reused or leaked
        listeners = [Listener(url, t) for t in tokens]
        started = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(lambda ls: ls.start(subscribe=False), listeners))
        connected_in = time.monotonic() - started
        time.sleep(3)
        with_sockets = worker_rss_kib(service)
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(Listener.stop, listeners))
        time.sleep(3)
        after = worker_rss_kib(service)
        print(f"  round {round_}: {n} sockets (connected in {connected_in:.1f}s): {with_sockets / 1024:.1f} MiB "
              f"-> {(with_sockets - idle_before) / n:.1f} KiB per socket over 0;  after they left: {after / 1024:.1f} MiB")


def measure_memory_burst(service: RunningService, url: str, token: str, sockets: int) -> None:
    """All sockets at once (socket.io-client in one Node process), as after a restart or deploy."""
    time.sleep(2)
    idle_before = worker_rss_kib(service)
    started = time.monotonic()
    node = subprocess.Popen(
        ["node", str(ROOT / "bench" / "socketio_clients.js"), url, token, str(sockets)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert node.stdout is not None and node.stdin is not None
    assert "ready" in node.stdout.readline(), "the Node clients did not all connect"
    connected_in = time.monotonic() - started
    time.sleep(3)
    with_sockets = worker_rss_kib(service)
    node.stdin.close()
    node.wait(30)
    print(f"\nworker memory (VmRSS), {sockets} sockets opened at once and subscribed (Node), on a fresh worker:")
    print(f"  0 sockets: {idle_before / 1024:.1f} MiB   {sockets} sockets (all connected in {connected_in:.1f}s): "
          f"{with_sockets / 1024:.1f} MiB -> {(with_sockets - idle_before) / sockets:.1f} KiB per socket over 0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"))
    parser.add_argument("--connects", type=int, default=50)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--idle-sockets", type=int, default=1000)
    args = parser.parse_args()
    if not args.server_url:
        parser.error("give --server-url or set TEST_DATABASE_URL")

    with scratch_database(sqlalchemy_url(args.server_url), f"admin_service_bench_{os.getpid()}") as database_url, TemporaryDirectory() as tmp:
        settings = make_settings(database_url)
        engine: Engine = make_engine(settings)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        upgrade(engine, settings)
        data = Data(engine)
        data.clear()
        admins = [data.user(user_type="admin", email=f"bench-{uuid.uuid4().hex[:8]}@example.com") for _ in range(4)]
        tokens = [token_for(a) for a in admins]
        env = {"SOCKETIO_MAX_CONNECTIONS_PER_USER": "100000", "SOCKETIO_EVENTS_PER_SECOND": "1000", "LOG_LEVEL": "WARNING"}
        with run_service(database_url, Path(tmp), workers=1, env=env) as service:
            print(f"service {service.url}: gunicorn, 1 gevent worker; cpus: {os.cpu_count()}")
            # Memory first, on a worker that has not served anything else yet.
            idle_tokens = [tokens[i % len(tokens)] for i in range(args.idle_sockets)]
            measure_memory(service, service.url, idle_tokens)

            measure_connect(service.url, tokens[0], args.connects)

            print(f"\ncommit -> job-update received over websocket, {args.updates} updates each:")
            socket_tokens = [tokens[i % len(tokens)] for i in range(args.sockets)]
            for trigger in (False, True):
                if trigger:
                    run_ddl(engine, notify_trigger_ddl(settings))
                mode = "NOTIFY trigger" if trigger else "polling 500 ms"
                measure_latency_node(service.url, tokens[0], 1, data, args.updates, f"{mode}, node, 1 socket")
                measure_latency_node(service.url, tokens[0], args.sockets, data, args.updates, f"{mode}, node, {args.sockets} sockets")
                measure_latency(service.url, socket_tokens, data, args.updates, f"{mode}, python-socketio, {args.sockets} sockets")

        with run_service(database_url, Path(tmp), workers=1, env=env) as service:
            measure_memory_burst(service, service.url, tokens[0], args.idle_sockets)
        engine.dispose()


if __name__ == "__main__":
    main()
