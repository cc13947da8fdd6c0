"""The service as production runs it (gunicorn + gevent workers, gunicorn.conf.py), for the bench."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH_SECRET = "admin-service-bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class Service:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def workers(self) -> list[int]:
        pid = self.process.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def worker_rss_mib(self) -> float:
        """VmRSS of the (first) worker process."""
        (worker, *_) = self.workers()
        return rss_mib(worker)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service_env(database_url: str, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": BENCH_SECRET,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        # The per-admin budget (600/min by default) would refuse a benchmark after a second;
        # the limiter still runs on every request.
        "RATE_LIMIT": "100000000 per minute",
        "GRACEFUL_TIMEOUT": "3",
        **(extra or {}),
    }
    if "WEB_CONCURRENCY" not in (extra or {}):
        env.pop("WEB_CONCURRENCY", None)  # gunicorn.conf.py's default: the service's own setting
    return env


@contextmanager
def run_service(database_url: str, log_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """gunicorn -c gunicorn.conf.py wsgi:app with the production defaults (workers: gunicorn.conf.py's
    default unless extra_env sets WEB_CONCURRENCY); its log goes to a file."""
    port = free_port()
    log_path = log_dir / f"service-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT,
            env=service_env(database_url, port, extra_env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = Service(process, port, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{service.log_tail()}")
            try:
                if requests.get(f"{service.url}/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{service.log_tail()}")
            time.sleep(0.2)
        # Every worker answers before measuring (each opens its own pool on first use).
        for _ in range(20):
            requests.get(f"{service.url}/health/ready", timeout=5)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
