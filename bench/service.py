"""The service as production runs it (gunicorn + gevent workers, gunicorn.conf.py), for the bench: the
tests' runner (tests/support/service.py) with the bench's settings, and what the bench measures of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support import ROOT
from tests.support.service import RunningService, start_gunicorn

BENCH_SECRET = "admin-service-bench-secret-0123456789abcdef"


def rss_mib(pid: int) -> float:
    """VmRSS of a process (what the kernel counts as resident: the figure that grows on a leak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot: the machine's load, whoever causes it."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


def worker_rss_mib(service: RunningService) -> float:
    """VmRSS of the (first) worker process."""
    (worker, *_) = service.workers()
    return rss_mib(worker)


def service_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": BENCH_SECRET,
        # The per-admin budget (600/min by default) would refuse a benchmark after a second;
        # the limiter still runs on every request.
        "RATE_LIMIT": "100000000 per minute",
        # Every bench client comes from 127.0.0.1: the per-address bound on Socket.IO handshakes
        # (300/min) would refuse all but the first few hundred sockets of a case.
        "SOCKETIO_HANDSHAKES_PER_MINUTE": "1000000",
        "SOCKETIO_MAX_PENDING": "100000",
        # Thousands of streams and sockets on one admin's token: the per-user caps (20 by default,
        # counted across workers) would refuse all but the first few.
        "SSE_MAX_STREAMS_PER_USER": "100000",
        "SOCKETIO_MAX_CONNECTIONS_PER_USER": "100000",
        "GRACEFUL_TIMEOUT": "3",
        **(extra or {}),
    }
    if "WEB_CONCURRENCY" not in (extra or {}):
        env.pop("WEB_CONCURRENCY", None)  # gunicorn.conf.py's default: the service's own setting
    return env


@contextmanager
def run_service(
    database_url: str, log_dir: Path, extra_env: dict[str, str] | None = None, root: Path | None = None
) -> Iterator[RunningService]:
    """gunicorn -c gunicorn.conf.py wsgi:app with the production defaults (workers: gunicorn.conf.py's
    default unless extra_env sets WEB_CONCURRENCY); its log goes to a file. `root`: another source
    tree to run (bench/compare.py's revision), by default this one."""
    env = service_env(database_url, extra_env)
    if root is not None:
        env["PYTHONPATH"] = str(root)  # its own package, not this tree's
    with start_gunicorn(
        env,
        log_dir,
        ready_path="/health/ready",
        start_timeout=60,
        poll_s=0.2,
        stop_timeout=15,
        root=root or ROOT,
    ) as service:
        # Every worker answers before measuring (each opens its own pool on first use).
        for _ in range(20):
            requests.get(f"{service.url}/health/ready", timeout=5)
        yield service
