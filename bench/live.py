"""Live cases: N concurrent SSE streams / Socket.IO sockets on ONE gunicorn gevent worker; the
worker's RSS with them open, and commit-to-client latency of job updates in each capture mode
(--capture-modes: polling, the opt-in NOTIFY trigger, exact change capture). Clients run in their own process, not in the service's: Node (SSE:
bench/sse_clients.js on Node's native HTTP parser; Socket.IO: bench/sio_clients.js with
socket.io-client), or bench/sse_clients.py (asyncio) for SSE where Node is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import requests

from bench.service import BENCH_SECRET, run_service, worker_rss_mib
from tests.support import ROOT
from tests.support.service import RunningService

BENCH = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def trigger(database_url: str, install: bool, command: str = "install-notify-trigger") -> None:
    """Install (or drop) an opt-in trigger: the NOTIFY trigger, or `install-change-capture` (exact mode)."""
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": BENCH_SECRET}
    subprocess.run(
        [sys.executable, "-m", "admin_service", "db", command, *([] if install else ["--drop"])],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass(frozen=True)
class CaptureMode:
    name: str  # as --capture-modes names it
    key: str  # its results key
    reported: str  # what /health/ready says once capture runs in it
    command: str | None  # the opt-in command that sets it up (None: nothing installed)


NOTIFY_TRIGGER, CHANGE_CAPTURE = "install-notify-trigger", "install-change-capture"
CAPTURE_MODES = {
    mode.name: mode
    for mode in (
        CaptureMode("poll", "polling", "poll", None),
        CaptureMode("trigger", "notify_trigger", "notify-trigger", NOTIFY_TRIGGER),
        CaptureMode("exact", "exact", "exact", CHANGE_CAPTURE),
    )
}


def parse_capture_modes(text: str) -> list[CaptureMode]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CAPTURE_MODES]
    if unknown:
        raise ValueError(f"unknown capture mode(s) {', '.join(unknown)}: choose from {', '.join(CAPTURE_MODES)}")
    return [CAPTURE_MODES[n] for n in dict.fromkeys(names)]


def command_available(command: str) -> bool:
    """Whether `python -m admin_service db <command>` exists in this checkout."""
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", "db", command, "--help"],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET": BENCH_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0


def set_capture_mode(database_url: str, mode: CaptureMode | None, installable: set[str]) -> None:
    """Install what `mode` needs and drop the other opt-in triggers (None: drop them all)."""
    for command in (NOTIFY_TRIGGER, CHANGE_CAPTURE):
        if command in installable and (mode is None or command != mode.command):
            trigger(database_url, False, command)
    if mode is not None and mode.command is not None:
        trigger(database_url, True, mode.command)


def reported_mode(service: RunningService, expected: str, timeout: float = 15) -> str | None:
    """Wait until /health/ready reports `expected` as the capture mode; the last mode it reported."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        try:
            seen = requests.get(f"{service.url}/health/ready", timeout=5).json()["data"].get("capture", {}).get("mode")
        except (requests.RequestException, ValueError, KeyError):
            pass
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


class Clients:
    """A client process speaking the bench protocol (ready line, `report`, EOF)."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.errors: list[str] = []
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.errors) < 50:
                self.errors.append(line.rstrip())

    def next_json(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.lines:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.lines:
                    raise RuntimeError(f"client gave no answer in {timeout:.0f} s: {self.errors[-5:]}")
                self._cond.wait(min(left, 0.5))
            return json.loads(self.lines.pop(0))

    def report(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return self.next_json(timeout)

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(30)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


def job_ids_to_update(database_url: str, n: int) -> list[str]:
    conn = psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            # The oldest queued jobs (they start first); jobs that an earlier run started do too.
            cur.execute(
                "SELECT id::text FROM archive.analysis_jobs WHERE status IN ('queued', 'processing') "
                "ORDER BY status = 'queued' DESC, created_at LIMIT %s",
                (n,),
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def commit_updates(database_url: str, ids: list[str], spacing_s: float) -> dict[str, float]:
    """A queued job starts processing (one already processing is retried), one commit at a time;
    each job's commit time."""
    conn = psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    committed: dict[str, float] = {}
    try:
        with conn.cursor() as cur:
            for job_id in ids:
                cur.execute(
                    "UPDATE archive.analysis_jobs SET status = 'processing', updated_at = now(), "
                    "processing_started_at = COALESCE(processing_started_at, now()), "
                    "retry_count = retry_count + (status = 'processing')::int WHERE id = %s",
                    (job_id,),
                )
                committed[job_id] = time.time()
                time.sleep(spacing_s)
    finally:
        conn.close()
    return committed


def latency_run(clients: Clients, database_url: str, ids: list[str], receivers: int, spacing_s: float) -> dict[str, Any]:
    clients.report()  # forget anything that arrived before
    committed = commit_updates(database_url, ids, spacing_s)
    expected = receivers * len(ids)
    deadline = time.monotonic() + 20
    arrivals: dict[str, list[float]] = {}
    while True:
        time.sleep(1.0)
        for job, times in clients.report()["arrivals"].items():
            arrivals.setdefault(job, []).extend(times)
        got = sum(len(arrivals.get(j, [])) for j in committed)
        if got >= expected or time.monotonic() > deadline:
            break
    latencies = [(t - committed[j]) * 1000 for j in committed for t in arrivals.get(j, [])]
    complete = sum(1 for j in committed if len(arrivals.get(j, [])) >= receivers)
    return {
        "updates": len(ids),
        "receivers": receivers,
        "expected": expected,
        "received": len(latencies),
        "every_receiver_every_event": len(latencies) == expected and complete == len(ids),
        "p50_ms": round(percentile(latencies, 0.5) or 0, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) or 0, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) or 0, 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        # Each update's median over its receivers, in commit order: a slow tail shows which updates.
        "per_update_p50_ms": [
            round(percentile([(t - committed[j]) * 1000 for t in arrivals[j]], 0.5) or 0, 1) if arrivals.get(j) else None
            for j in committed
        ],
    }


def measure(
    service: RunningService,
    kind: str,
    count: int,
    token: str,
    database_url: str,
    updates: int,
    spacing_s: float,
    log: Callable[[str], None],
    modes: list[CaptureMode],
    installable: set[str],
) -> dict[str, Any]:
    if kind == "sse" and shutil.which("node"):
        command = ["node", str(BENCH / "sse_clients.js"), service.url, token, str(count)]
    elif kind == "sse":
        command = [sys.executable, "-m", "bench.sse_clients", service.url, token, str(count)]
    else:
        command = ["node", str(BENCH / "sio_clients.js"), service.url, token, str(count)]
    idle_rss = worker_rss_mib(service)
    started = time.monotonic()
    clients = Clients(command)
    try:
        ready = clients.next_json(timeout=120 + count / 20)
        connect_s = round(time.monotonic() - started, 1)
        time.sleep(3)
        rss = worker_rss_mib(service)
        result: dict[str, Any] = {
            "transport": kind,
            "clients": count,
            "connected": ready["ready"],
            "refused": ready["failed"],
            "connect_seconds": connect_s,
            "worker_rss_idle_mib": round(idle_rss, 1),
            "worker_rss_mib": round(rss, 1),
            "rss_per_client_kib": round((rss - idle_rss) * 1024 / max(1, ready["ready"]), 1),
        }
        log(
            f"  {kind} x{count}: {ready['ready']} connected ({ready['failed']} refused) in {connect_s} s; "
            f"worker RSS {idle_rss:.0f} -> {rss:.0f} MiB"
        )
        ids = job_ids_to_update(database_url, len(modes) * updates)
        for n, mode in enumerate(modes):
            set_capture_mode(database_url, mode, installable)
            seen = reported_mode(service, mode.reported)
            if seen != mode.reported:
                log(f"    {mode.key}: /health/ready reports capture mode {seen!r}, not {mode.reported!r} (measured anyway)")
            time.sleep(1.5)  # the leader's pass after the change
            run = latency_run(clients, database_url, ids[n * updates : (n + 1) * updates], ready["ready"], spacing_s)
            run["reported_mode"] = seen
            result[mode.key] = run
            log(
                f"    {mode.key:15s} p50 {run['p50_ms']} p99 {run['p99_ms']} max {run['max_ms']} ms; "
                f"received {run['received']}/{run['expected']}"
            )
        set_capture_mode(database_url, None, installable)
        result["worker_rss_after_mib"] = round(worker_rss_mib(service), 1)
        result["loadavg_1m"] = round(os.getloadavg()[0], 2)
        result["client_errors"] = clients.errors[:5]
        return result
    finally:
        clients.close()
        time.sleep(3)  # let the worker notice the closed connections


def run_live(database_url: str, engine: Any, token: str, args: Any, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    sse_counts = [int(x) for x in str(args.sse).split(",") if x.strip()]
    socket_counts = [int(x) for x in str(args.sockets).split(",") if x.strip()]
    modes = parse_capture_modes(getattr(args, "capture_modes", ",".join(CAPTURE_MODES)))
    out: dict[str, Any] = {"sse": [], "socketio": [], "spacing_s": 0.5, "updates": args.updates}
    if not sse_counts and not socket_counts:
        out["modes"] = [m.key for m in modes]
        return out
    if socket_counts and not shutil.which("node"):
        log("node is not installed: Socket.IO cases skipped")
        socket_counts = []
    installable = {c for c in (NOTIFY_TRIGGER, CHANGE_CAPTURE) if command_available(c)}
    for mode in list(modes):
        if mode.command is not None and mode.command not in installable:
            log(f"capture mode {mode.name} skipped: `python -m admin_service db {mode.command}` does not exist in this checkout")
            modes.remove(mode)
    out["modes"] = [m.key for m in modes]
    set_capture_mode(database_url, None, installable)
    env = {"WEB_CONCURRENCY": "1", "SOCKETIO_MAX_CONNECTIONS_PER_USER": "100000", "SOCKETIO_EVENTS_PER_SECOND": "1000"}
    log(
        "\n[live] one gunicorn gevent worker, started afresh for each case; default capture/tail settings; "
        f"capture modes: {', '.join(m.name for m in modes) or 'none'}"
    )
    for kind, counts in (("sse", sse_counts), ("socketio", socket_counts)):
        for count in counts:
            with run_service(database_url, workdir, env) as service:
                time.sleep(2)
                out["worker_rss_start_mib"] = round(worker_rss_mib(service), 1)
                out[kind].append(measure(service, kind, count, token, database_url, args.updates, 0.5, log, modes, installable))
    return out
