"""SSE figures for the notes: commit-to-subscriber latency with and without the opt-in NOTIFY
trigger, and the worker's memory per idle stream. Slow (about a minute): not part of the suite.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/live_measure.py

Runs the service as production does (gunicorn, one gevent worker, default capture/tail
settings: CAPTURE_POLL_MS=500, TAIL_POLL_MS=1000) on a private database it creates on that
server and drops afterwards. Measures:
- latency: a job row UPDATE committed -> its job-update parsed by an SSE client
  (tests/sse_client.py) in this process, `--updates` changes spread over the poll phase,
  first with polling only, then with the trigger (installed with the CLI, dropped after);
- memory: VmRSS of the worker with no stream, with `--streams` idle streams open (plain
  sockets that sent the request and read nothing more; events=job-update, so only a
  heartbeat every SSE_HEARTBEAT_S reaches them), and after they closed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_service.db.engine import make_engine, sqlalchemy_url  # noqa: E402
from admin_service.db.fixtures import create_fixture_tables  # noqa: E402
from admin_service.db.migrations import upgrade  # noqa: E402
from tests.conftest import TEST_SECRET, RunningService, make_settings, run_service, scratch_database, token_for  # noqa: E402
from tests.factories import Data  # noqa: E402
from tests.sse_client import SSEClient  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 0.5):6.1f}  p95 {percentile(ms, 0.95):6.1f}  p99 {percentile(ms, 0.99):6.1f}  "
            f"max {max(ms):6.1f} ms  (n={len(ms)})")


def worker_rss_kib(service: RunningService) -> int:
    pid = service.process.pid
    (worker,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def trigger_cli(database_url: str, drop: bool) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": TEST_SECRET}
    subprocess.run([sys.executable, "-m", "admin_service", "db", "install-notify-trigger", *(["--drop"] if drop else [])],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)


def measure_latency(service: RunningService, token: str, engine: Engine, updates: int) -> list[float]:
    """UPDATE committed -> job-update parsed, one change at a time."""
    data = Data(engine)
    jobs = [data.job(status="processing") for _ in range(updates)]
    found = []
    with SSEClient(service.url, token=token, params={"events": "job-update"}) as client:
        time.sleep(1.0)
        for job in jobs:
            with engine.begin() as conn:
                conn.execute(text("UPDATE archive.analysis_jobs SET status = 'completed', updated_at = now() WHERE id = :id"),
                             {"id": job["id"]})
            committed = time.monotonic()
            event = client.wait_for(lambda e, j=job: e.name == "job-update" and e.data["job"]["id"] == j["id"], 10)
            found.append(event.received_at - committed)
            time.sleep(0.237)  # not a multiple of the poll interval: commits land all over it
    return found


def open_idle_stream(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /admin/jobs/stream?events=job-update HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("stream closed at once")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return sock


def measure_memory(service: RunningService, token: str, streams: int) -> None:
    open_idle_stream(service.port, token).close()  # warm-up: what the first stream loads is not per-stream cost
    time.sleep(2)
    before = worker_rss_kib(service)
    print(f"\nworker memory (VmRSS), {streams} idle SSE streams (opened 50 at a time), twice:")
    print(f"  0 streams: {before / 1024:.1f} MiB")
    for round_ in (1, 2):  # a second round shows whether what the first left behind is reused or leaked
        started = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            socks = list(pool.map(lambda _: open_idle_stream(service.port, token), range(streams)))
        opened_in = time.monotonic() - started
        time.sleep(3)
        with_streams = worker_rss_kib(service)
        for sock in socks:
            sock.close()
        time.sleep(3)
        after = worker_rss_kib(service)
        print(f"  round {round_}: {streams} streams (opened in {opened_in:.1f}s): {with_streams / 1024:.1f} MiB "
              f"-> {(with_streams - before) / streams:.1f} KiB per stream over 0;  after they closed: {after / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"))
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    if not args.server_url:
        parser.error("give --server-url or set TEST_DATABASE_URL")

    with scratch_database(sqlalchemy_url(args.server_url), f"admin_service_bench_sse_{os.getpid()}") as database_url, TemporaryDirectory() as tmp:
        settings = make_settings(database_url)
        engine = make_engine(settings)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        upgrade(engine, settings)
        data = Data(engine)
        data.clear()
        token = token_for(data.user(user_type="admin", email=f"bench-{uuid.uuid4().hex[:8]}@example.com"))
        with run_service(database_url, Path(tmp), workers=1, env={"LOG_LEVEL": "WARNING"}) as service:
            print(f"service {service.url}: gunicorn, 1 gevent worker, default capture settings; cpus: {os.cpu_count()}")
            measure_memory(service, token, args.streams)
            print(f"\ncommit -> job-update parsed by an SSE client, {args.updates} updates each:")
            polled = measure_latency(service, token, engine, args.updates)
            print(f"  polling (CAPTURE_POLL_MS=500)  {summary(polled)}")
            trigger_cli(database_url, drop=False)
            try:
                woken = measure_latency(service, token, engine, args.updates)
            finally:
                trigger_cli(database_url, drop=True)
            print(f"  NOTIFY trigger                 {summary(woken)}")
        engine.dispose()


if __name__ == "__main__":
    main()
