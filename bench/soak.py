"""The soak: minutes of mixed load against two instances of the service, as production runs them
(gunicorn + gevent, one database, rate limits shared in Redis); writes bench/SOAK.md and
bench/soak.json and exits non-zero when a criterion fails.

    make soak                                             # 10 minutes, 1,000 streams, embedded PostgreSQL
    SOAK_ARGS="--minutes 1 --streams 200" make soak       # a short run
    .venv/bin/python -m bench.soak --database-url postgresql://postgres@127.0.0.1:5432/soak

Load, all at once for --minutes:
- --streams SSE streams (events=job-update,job-alert) split over the two instances, held by Node
  clients (bench/sse_clients.js --count) in their own processes; each stream counts the stored
  events it receives and resumes with Last-Event-ID if the server ends it;
- --rest-rate requests/s (open loop) of the benchmark's REST cases (bench/rest.py: stats, list with
  filters and sorts, offset and cursor pages, details, results), alternating between instances;
- --change-rate job changes/s: new jobs (inserted, or taken from the dataset's queued backlog)
  start processing, then complete or fail, and every change committed is remembered. With
  --capture exact (the default: db install-change-capture) at a worker's pace: no pause between
  the changes of one job, bursts of 1,000 changes in one transaction, and transactions that
  commit seconds after they wrote; with --capture notify (the NOTIFY trigger, sampling) each
  change on its own, 3 s apart per job.

Criteria:
- errors: no REST answer other than 2xx, no connection error, every stream connected, no stream
  ended by the server, no worker restarted;
- events: every job change is in the event log, and every stream received every stored event
  logged after the id the server gave it on connecting (counted per stream against the log);
- exact capture: every change logged exactly once, in its job's order (against the writer's record);
- memory: each worker's VmRSS (sampled every --sample-seconds), max over the last minute against
  the value at the end of the warm-up (the first 2 minutes, or 20 % of a shorter run): ≤ 10 % growth.

--database-url (or SOAK_DATABASE_URL) names a database of its own, created when missing; its
archive tables are replaced by a fresh --jobs dataset (bench/dataset.py) and its event log
schema is emptied. Without it a fresh embedded PostgreSQL is used, as `make bench` does.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import requests
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import dataset, rest  # noqa: E402
from bench.live import BENCH, Clients, percentile, trigger  # noqa: E402
from bench.run import admin_token, log, machine_info, open_database, raise_fd_limit  # noqa: E402
from bench.service import cpu_seconds, machine_cpu, rss_mib, run_service  # noqa: E402
from tests.support.service import RunningService  # noqa: E402

STREAM_EVENTS = "job-update,job-alert"
MAX_GROWTH = 0.10
SETTLE_S = 60.0  # after the load: how long capture and delivery may take to catch up
# Sampling capture (--capture notify) logs a row as it finds it, so two changes of one job
# between two passes would be one event: there the writer leaves each job alone this long
# between its changes. Exact capture (the default) needs no spacing: the writer goes at a
# worker's pace, with bursts in one transaction and transactions that commit late.
CHANGE_SPACING_S = 3.0
BURST_JOBS = 500  # a burst: this many jobs inserted and completed in one transaction (2 changes each)
BURST_EVERY_S = 10.0
SLOW_EVERY_S = 7.0  # a transaction that commits SLOW_S after it wrote (its updated_at is older than others')
SLOW_S = 3.0
CAPTURE_COMMANDS = {"exact": "install-change-capture", "notify": "install-notify-trigger"}


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def code_version() -> str:
    """The commit the service ran from, and whether its code had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "admin_service", "gunicorn.conf.py", "wsgi.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{commit}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else " (clean)")


def ensure_redis(url: str) -> str:
    """The shared rate-limit store; a local one is started as .ci/run does when it is down."""
    from tests.support.redis_server import answers

    if answers(url):
        return "running"
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or not shutil.which("redis-server"):
        raise SystemExit(f"Redis at {url} does not answer (and is not a local one this can start)")
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(parts.port or 6379),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 10
    while not answers(url):
        if time.monotonic() > deadline:
            raise SystemExit(f"redis-server did not answer at {url}")
        time.sleep(0.1)
    return "started (redis-server --daemonize yes)"


# --- REST load ------------------------------------------------------------------------------


class HttpCaseClient:
    """What rest.build_cases needs from a test client (get -> .get_json()), over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get(self, path: str, headers: dict[str, str]) -> Any:
        response = requests.get(self.base_url + path, headers=headers, timeout=60)
        response.raise_for_status()
        return SimpleNamespace(get_json=response.json)


class RestLoad:
    """A constant rate of the benchmark's REST cases, round-robin over cases, their paths and the
    instances. Open loop: a slow answer does not lower the rate (requests queue instead), so the
    service sees the same load all along; a request's latency is counted from its slot."""

    def __init__(self, urls: list[str], token: str, cases: list[rest.Case], rate: float, threads: int = 16) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}"}
        self.cases = cases
        self.rate = rate
        self.threads = threads
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.by_instance: list[Counter[str]] = [Counter() for _ in urls]
        self.latency_ms: dict[str, list[float]] = {case.name: [] for case in cases}
        self.errors: list[dict[str, Any]] = []
        self.sent = 0
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _one(self, n: int, slot: float) -> None:
        case = self.cases[n % len(self.cases)]
        path = case.paths[(n // len(self.cases)) % len(case.paths)]
        instance = n % len(self.urls)
        # How long this thread's connection to the instance sat idle: a reset right at the server's
        # keep-alive timeout is the keep-alive race, not a failing request.
        last_used = self._local.__dict__.setdefault("last_used", {})
        idle = time.monotonic() - last_used[instance] if instance in last_used else None
        body = ""
        try:
            response = self._session().get(self.urls[instance] + path, headers=self.headers, timeout=30)
            status = str(response.status_code)
            if not response.ok:
                body = response.text[:300]
        except requests.RequestException as exc:
            status = f"connection error ({type(exc).__name__})"
            body = str(exc)[:300]
        last_used[instance] = time.monotonic()
        elapsed_ms = (time.monotonic() - slot) * 1000
        with self.lock:
            self.statuses[status] += 1
            self.by_instance[instance][status] += 1
            self.latency_ms[case.name].append(elapsed_ms)
            if body and len(self.errors) < 20:
                self.errors.append(
                    {
                        "at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "instance": instance,
                        "path": path,
                        "status": status,
                        "body": body,
                        "connection_idle_s": None if idle is None else round(idle, 3),
                    }
                )

    def run(self, stop: threading.Event) -> None:
        interval = 1 / self.rate
        with ThreadPoolExecutor(self.threads, thread_name_prefix="rest") as pool:
            slot = time.monotonic()
            while not stop.is_set():
                pool.submit(self._one, self.sent, slot)
                self.sent += 1
                slot += interval
                stop.wait(max(0.0, slot - time.monotonic()))

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def summary(self) -> dict[str, Any]:
        total = sum(self.statuses.values())
        cases = []
        for case in self.cases:
            values = self.latency_ms[case.name]
            cases.append(
                {
                    "case": case.name,
                    "requests": len(values),
                    **{f"p{q}_ms": round(percentile(values, q / 100) or 0, 1) for q in (50, 95, 99)},
                    "max_ms": round(max(values), 1) if values else None,
                }
            )
        return {
            "rate_per_s": self.rate,
            "requests": total,
            "failures": self.failures,
            "error_rate": self.failures / total if total else None,
            "statuses": dict(self.statuses),
            "by_instance": [dict(c) for c in self.by_instance],
            "cases": cases,
            "first_errors": self.errors,
        }


# --- job changes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    job: str
    status: str
    updated_at: float  # epoch seconds, as committed
    kind: str  # insert | update


INSERT = """
INSERT INTO archive.analysis_jobs (job_id, user_id, status, assessment_name, priority, created_at, updated_at)
VALUES (gen_random_uuid()::text, md5('user-' || %s)::uuid, 'queued', %s, %s, now(), now())
RETURNING id::text, extract(epoch FROM updated_at)::float8
"""
START = """
UPDATE archive.analysis_jobs SET status = 'processing', processing_started_at = now(), updated_at = now()
WHERE id = %s RETURNING extract(epoch FROM updated_at)::float8
"""
COMPLETE = """
UPDATE archive.analysis_jobs SET status = 'completed', completed_at = now(), updated_at = now()
WHERE id = %s RETURNING extract(epoch FROM updated_at)::float8
"""
# One failure in three has used up its retries: a retries_exhausted alert joins the log too.
FAIL = """
UPDATE archive.analysis_jobs SET status = 'failed', error_message = 'soak: simulated failure', updated_at = now(),
       retry_count = CASE WHEN %s THEN max_retries ELSE retry_count END
WHERE id = %s RETURNING extract(epoch FROM updated_at)::float8
"""
ASSESSMENTS = ("AI-Driven Talent Mapping", "AI-Based IQ Test", "Custom Assessment")


BURST = """
WITH new AS (
    INSERT INTO archive.analysis_jobs (job_id, user_id, status, assessment_name, priority, created_at, updated_at)
    SELECT gen_random_uuid()::text, md5('user-' || (1 + g %% %s))::uuid, 'queued', 'Custom Assessment', 5, now(), now()
    FROM generate_series(1, %s) AS g
    RETURNING id
)
SELECT id::text, extract(epoch FROM now())::float8 FROM new
"""
BURST_COMPLETE = """
UPDATE archive.analysis_jobs SET status = 'completed', completed_at = now(), processing_started_at = now()
WHERE id = ANY(%s::uuid[])
"""


class Writer:
    """Job changes at a steady rate: a job is created (inserted, or every other one taken from
    the dataset's queued backlog), starts processing, then completes (or fails, one in ten).
    Sampled (`spacing_s` > 0): each change committed on its own, at least `spacing_s` between
    the changes of one job. Exact (`bursts`): no spacing, so one job can change several times
    in a second; every BURST_EVERY_S one transaction inserts and completes BURST_JOBS jobs; every
    SLOW_EVERY_S one job's change is held in an open transaction for SLOW_S while others commit.
    `changes` lists every committed change, in each job's commit order."""

    def __init__(self, database_url: str, rate: float, users: int, *, spacing_s: float, bursts: bool) -> None:
        self.database_url = database_url
        self.rate = rate
        self.users = users
        self.spacing_s = spacing_s
        self.bursts = bursts
        self.changes: list[Change] = []
        self.errors: list[str] = []
        self.started = 0  # jobs brought in (inserted or taken from the backlog)
        self.finished = 0
        self.burst_transactions = 0
        self.slow_transactions = 0

    def run(self, stop: threading.Event) -> None:
        conn = psycopg2.connect(libpq(self.database_url), application_name="soak-writer")
        conn.autocommit = True
        slow = psycopg2.connect(libpq(self.database_url), application_name="soak-writer-slow")  # not autocommit
        try:
            with conn.cursor() as cur, slow.cursor() as slow_cur:
                cur.execute("SELECT id::text FROM archive.analysis_jobs WHERE status = 'queued' ORDER BY created_at LIMIT 100000")
                backlog = deque(row[0] for row in cur.fetchall())
                in_flight: deque[tuple[str, str, float]] = deque()  # (job, status, when it changed)
                held: tuple[Change, float] | None = None  # the slow transaction's change, and when to commit it
                slot = started = time.monotonic()
                next_burst, next_slow = started + BURST_EVERY_S / 2, started + SLOW_EVERY_S / 3
                while not stop.is_set():
                    now = time.monotonic()
                    try:
                        if held is not None and now >= held[1]:
                            slow.commit()
                            self._committed(held[0], in_flight)
                            held = None
                        if self.bursts and now >= next_burst:
                            self._burst(conn, cur)
                            next_burst += BURST_EVERY_S
                        elif self.bursts and held is None and now >= next_slow and in_flight:
                            held = (self._transition(slow_cur, in_flight.popleft()), now + SLOW_S)
                            next_slow += SLOW_EVERY_S
                        else:
                            self._step(cur, backlog, in_flight)
                    except psycopg2.Error as exc:
                        self.errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
                    slot += 1 / self.rate
                    stop.wait(max(0.0, slot - time.monotonic()))
                if held is not None:
                    slow.commit()
                    self._committed(held[0], in_flight)
        finally:
            slow.close()
            conn.close()

    def _committed(self, change: Change, in_flight: deque[tuple[str, str, float]]) -> None:
        self.changes.append(change)
        if change.status == "processing":
            in_flight.append((change.job, change.status, time.monotonic()))
        else:
            self.finished += 1
        if change.kind == "slow":
            self.slow_transactions += 1

    def _transition(self, cur: Any, flight: tuple[str, str, float]) -> Change:
        """The next change of a job in flight (not committed yet when `cur` is in a transaction)."""
        job, status, _ = flight
        if status == "queued":
            cur.execute(START, (job,))
            new = "processing"
        elif self.finished % 10 == 9:
            cur.execute(FAIL, (self.finished % 30 == 29, job))
            new = "failed"
        else:
            cur.execute(COMPLETE, (job,))
            new = "completed"
        return Change(job, new, cur.fetchone()[0], "update" if cur.connection.autocommit else "slow")

    def _burst(self, conn: Any, cur: Any) -> None:
        """BURST_JOBS jobs inserted and completed in one transaction: 2 x BURST_JOBS changes."""
        conn.autocommit = False
        try:
            cur.execute(BURST, (self.users, BURST_JOBS))
            rows = cur.fetchall()
            cur.execute(BURST_COMPLETE, ([job for job, _ in rows],))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.autocommit = True
        self.burst_transactions += 1
        for job, at in rows:
            self.changes.append(Change(job, "queued", at, "insert"))
        for job, at in rows:
            self.changes.append(Change(job, "completed", at, "update"))

    def _step(self, cur: Any, backlog: deque[str], in_flight: deque[tuple[str, str, float]]) -> None:
        now = time.monotonic()
        if in_flight and now - in_flight[0][2] >= self.spacing_s:
            self._committed(self._transition(cur, in_flight.popleft()), in_flight)
            return
        self.started += 1
        if backlog and self.started % 2:
            job = backlog.popleft()
            cur.execute(START, (job,))
            self.changes.append(Change(job, "processing", cur.fetchone()[0], "update"))
            in_flight.append((job, "processing", time.monotonic()))
            return
        k = self.started
        cur.execute(INSERT, (1 + k % self.users, ASSESSMENTS[k % 3], k % 10))
        job, updated_at = cur.fetchone()
        self.changes.append(Change(job, "queued", updated_at, "insert"))
        in_flight.append((job, "queued", time.monotonic()))


def out_of_order(database_url: str, schema: str, changes: list[Change]) -> tuple[int, int]:
    """Exact capture: (jobs whose logged changes differ from the writer's, in order and count;
    changes logged more than once). Only events logged from change rows count (the hand-over
    pass at the first leadership samples the dataset's rows before the writer starts)."""
    written: dict[str, list[tuple[str, float]]] = {}
    for c in changes:
        written.setdefault(c.job, []).append((c.status, round(c.updated_at, 6)))
    conn = psycopg2.connect(libpq(database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT job_row_id::text, status, extract(epoch FROM (payload->'job'->>'updated_at')::timestamptz)::float8 "
                f"FROM \"{schema}\".job_events WHERE event = 'job-update' AND change_id IS NOT NULL "
                "AND job_row_id = ANY(%s::uuid[]) ORDER BY id",
                (sorted(written),),
            )
            logged: dict[str, list[tuple[str, float]]] = {}
            for job, status, at in cur.fetchall():
                logged.setdefault(job, []).append((status, round(at, 6)))
    finally:
        conn.close()
    wrong = sum(1 for job, seq in written.items() if logged.get(job) != seq)
    repeated = sum(len(seq) - len(set(seq)) for seq in logged.values())
    return wrong, repeated


def missing_changes(database_url: str, schema: str, changes: list[Change]) -> tuple[list[Change], int]:
    """The changes with no job-update event of the same job, status and updated_at in the log;
    and how many events were logged for them."""
    conn = psycopg2.connect(libpq(database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT job_row_id::text, status, extract(epoch FROM (payload->'job'->>'updated_at')::timestamptz)::float8 "
                f"FROM \"{schema}\".job_events WHERE event = 'job-update' AND job_row_id = ANY(%s::uuid[])",
                (sorted({c.job for c in changes}),),
            )
            logged = Counter((job, status, round(at, 6)) for job, status, at in cur.fetchall())
    finally:
        conn.close()
    missing = [c for c in changes if logged[(c.job, c.status, round(c.updated_at, 6))] == 0]
    return missing, sum(logged.values())


def logged_ids(database_url: str, schema: str) -> list[int]:
    conn = psycopg2.connect(libpq(database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id FROM \"{schema}\".job_events WHERE event IN ('job-update', 'job-alert') ORDER BY id")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


# --- memory ---------------------------------------------------------------------------------


class MemorySampler:
    """VmRSS of every gunicorn worker (the masters' children) every `interval` seconds."""

    def __init__(self, services: list[RunningService], interval: float) -> None:
        self.services = services
        self.interval = interval
        self.workers = [service.workers() for service in services]
        self.samples: list[dict[str, Any]] = []
        self.restarted: list[dict[str, Any]] = []
        self.alive: set[int] = set()

    def sample(self, t: float) -> None:
        self.alive = set()
        for instance, service in enumerate(self.services):
            current = service.workers()
            self.alive.update(current)
            for pid in current:
                if pid not in self.workers[instance]:
                    self.restarted.append({"t": round(t, 1), "instance": instance, "new_pid": pid})
                    self.workers[instance].append(pid)
                try:
                    self.samples.append(
                        {
                            "t": round(t, 1),
                            "instance": instance,
                            "pid": pid,
                            "rss_mib": round(rss_mib(pid), 1),
                            "cpu_s": round(cpu_seconds(pid), 2),
                        }
                    )
                except (OSError, RuntimeError):
                    pass  # exited between the listing and the read: the next sample says so

    def run(self, stop: threading.Event, t0: float) -> None:
        while not stop.wait(self.interval):
            self.sample(time.monotonic() - t0)

    def growth(self, duration: float, warm_up: float, last_window: float) -> list[dict[str, Any]]:
        rows = []
        for instance, pids in enumerate(self.workers):
            for pid in pids:
                own = [s for s in self.samples if s["pid"] == pid and s["t"] <= duration + 1]
                series = [(s["t"], s["rss_mib"]) for s in own]
                if not series:
                    continue
                span = own[-1]["t"] - own[0]["t"]
                warm = next((rss for t, rss in series if t >= warm_up), series[-1][1])
                last = [rss for t, rss in series if t >= duration - last_window] or [series[-1][1]]
                rows.append(
                    {
                        "instance": instance,
                        "pid": pid,
                        "start_mib": series[0][1],
                        "warm_mib": warm,
                        "last_max_mib": max(last),
                        "end_mib": series[-1][1],
                        "max_mib": max(r for _, r in series),
                        "growth": (max(last) - warm) / warm,
                        "samples": len(series),
                        "exited": pid not in self.alive,
                        "cpu_percent": round(100 * (own[-1]["cpu_s"] - own[0]["cpu_s"]) / span, 1) if span else None,
                    }
                )
        return rows


# --- the run --------------------------------------------------------------------------------


def lag_summary(histograms: list[dict[str, int]]) -> dict[str, Any]:
    """Percentiles of the streams' delivery lag from their per-millisecond histograms."""
    merged: Counter[int] = Counter()
    for hist in histograms:
        merged.update({int(ms): n for ms, n in hist.items()})
    total = sum(merged.values())
    out: dict[str, Any] = {"events": total}
    if not total:
        return out
    ordered = sorted(merged.items())
    for q in (0.5, 0.95, 0.99):
        seen = 0
        for ms, n in ordered:
            seen += n
            if seen >= q * total:
                out[f"p{round(q * 100)}_ms"] = ms
                break
    out["max_ms"] = ordered[-1][0]
    return out


def delivery(reports: list[dict[str, Any]], ids: list[int], counts: list[int]) -> dict[str, Any]:
    """Per stream: the stored events logged after its base id (expected) against what it received."""
    newest = ids[-1] if ids else 0
    per_instance = []
    for report, count in zip(reports, counts, strict=True):
        streams = report["streams"]
        expected = [len(ids) - bisect.bisect_right(ids, st["base"] or 0) for st in streams]
        received = [st["count"] for st in streams]
        complete = sum(
            1
            for st, e in zip(streams, expected, strict=True)
            if st["count"] == e and (st["last"] or st["base"] or 0) == newest and not st["disorder"]
        )
        per_instance.append(
            {
                "streams": count,
                "reported": len(streams),
                "open_at_end": report["open"],
                "complete": complete,
                "expected_min": min(expected, default=0),
                "expected_max": max(expected, default=0),
                "received_min": min(received, default=0),
                "received_max": max(received, default=0),
                "expected_total": sum(expected),
                "received_total": sum(received),
                "short_streams": sum(1 for r, e in zip(received, expected, strict=True) if r < e),
                "out_of_order": sum(st["disorder"] for st in streams),
                "ended_by_server": sum(st["ends"] for st in streams),
                "failed_resumes": sum(st["failed_resumes"] for st in streams),
                "error_events": sum(st["errors"] for st in streams),
                "reset_events": sum(st["resets"] for st in streams),
                "without_base_id": sum(1 for st in streams if st["base"] is None),
            }
        )
    return {
        "newest_id": newest,
        "events_logged": len(ids),
        "instances": per_instance,
        "lag": lag_summary([r["lag_ms"] for r in reports]),
    }


def settle(
    clients: list[Clients], database_url: str, schema: str, writer: Writer, deadline_s: float
) -> tuple[list[dict[str, Any]], list[int], list[Change], float]:
    """Wait until every change is logged and every stream holds the newest event (or time is up)."""
    started = time.monotonic()
    while True:
        missing, _ = missing_changes(database_url, schema, writer.changes)
        ids = logged_ids(database_url, schema)
        reports = [c.report() for c in clients]
        newest = ids[-1] if ids else 0
        behind = sum(1 for r in reports for st in r["streams"] if (st["last"] or st["base"] or 0) != newest)
        waited = time.monotonic() - started
        if (not missing and not behind) or waited > deadline_s:
            return reports, ids, missing, round(waited, 1)
        time.sleep(2)


def service_log_lines(services: list[RunningService]) -> dict[str, Any]:
    """Warnings and errors the services logged (JSON lines and gunicorn's own), counted."""
    levels: Counter[str] = Counter()
    samples: list[str] = []
    for service in services:
        for line in service.log_path.read_text(errors="replace").splitlines():
            level = None
            if line.startswith("{"):
                try:
                    level = json.loads(line).get("level")
                except ValueError:
                    pass
            elif "[ERROR]" in line or "[CRITICAL]" in line or line.startswith("Traceback"):
                level = "ERROR"
            elif "[WARNING]" in line:
                level = "WARNING"
            if level in ("WARNING", "ERROR", "CRITICAL"):
                levels[level] += 1
                if len(samples) < 15:
                    samples.append(f"{service.port}: {line[:400]}")
    return {"levels": dict(levels), "first": samples}


def run_soak(args: argparse.Namespace, stack: ExitStack, workdir: Path, results: dict[str, Any]) -> None:
    duration = args.minutes * 60
    warm_up = min(120.0, 0.2 * duration)
    last_window = min(60.0, 0.2 * duration)
    sample_s = min(args.sample_seconds, max(1.0, duration / 20))
    database_url, results["database"] = open_database(stack, args.database_url, workdir)
    engine = create_engine(database_url, pool_size=2)
    stack.callback(engine.dispose)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    results["machine"] = machine_info(engine, f"python requests (REST, open loop) + node {node} bench/sse_clients.js (SSE)")

    log(f"dataset: {args.jobs:,} jobs, {args.users:,} users")
    results["dataset"] = dataset.generate(database_url, args.jobs, args.users, force=True, log=log)
    from admin_service.config import load_settings
    from admin_service.db.migrations import upgrade
    from bench.service import BENCH_SECRET

    settings = load_settings({"JWT_SECRET": BENCH_SECRET}, database_url=database_url)
    schema = settings.admin_schema
    with engine.begin() as conn:
        # The log of an earlier run names jobs the fresh dataset no longer has.
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    upgrade(engine, settings)
    exact = args.capture == "exact"
    trigger(database_url, True, CAPTURE_COMMANDS[args.capture])
    token = admin_token(engine)
    results["redis"] = {"url": args.redis_url, "state": ensure_redis(args.redis_url)}

    env = {"RATE_LIMIT_STORAGE_URI": args.redis_url}
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    services = [stack.enter_context(run_service(database_url, workdir, env)) for _ in range(2)]
    workers = [len(s.workers()) for s in services]
    log(f"two instances: {', '.join(s.url for s in services)}; gunicorn gevent workers per instance: {workers}")
    results["settings"] = {
        "minutes": args.minutes,
        "streams": args.streams,
        "stream_events": STREAM_EVENTS,
        "rest_rate_per_s": args.rest_rate,
        "change_rate_per_s": args.change_rate,
        "capture": args.capture,
        "change_spacing_s": 0.0 if exact else CHANGE_SPACING_S,
        "bursts": {"jobs": BURST_JOBS, "every_s": BURST_EVERY_S, "slow_every_s": SLOW_EVERY_S, "slow_s": SLOW_S}
        if exact
        else None,
        "instances": 2,
        "workers_per_instance": workers,
        "workers_source": "--workers" if args.workers else "gunicorn.conf.py default",
        "notify_trigger": f"installed (db {CAPTURE_COMMANDS[args.capture]})",
        "rate_limit": "100000000 per minute per admin, Redis storage",
        "warm_up_s": warm_up,
        "last_window_s": last_window,
        "sample_s": sample_s,
        "settle_max_s": SETTLE_S,
        "max_growth": MAX_GROWTH,
    }

    # Its criterion is that every answer is 2xx: the cases whose answer is meant to be an error
    # (the bench's unknown id, a 404) are not part of its mix.
    cases = [
        case
        for case in rest.build_cases(engine, HttpCaseClient(services[0].url), {"Authorization": f"Bearer {token}"})
        if case.extra.get("expect_status") is None
    ]
    split = [args.streams // 2 + args.streams % 2, args.streams // 2]
    clients = []
    connect_started = time.monotonic()
    for service, count in zip(services, split, strict=True):
        client = Clients(
            ["node", str(BENCH / "sse_clients.js"), service.url, token, str(count), f"--events={STREAM_EVENTS}", "--count"]
        )
        stack.callback(client.close)
        clients.append(client)
    ready = [c.next_json(timeout=120 + count / 20) for c, count in zip(clients, split, strict=True)]
    results["streams_connect"] = {
        "split": split,
        "ready": [r["ready"] for r in ready],
        "failed": [r["failed"] for r in ready],
        "seconds": round(time.monotonic() - connect_started, 1),
    }
    log(
        f"{sum(r['ready'] for r in ready)} streams connected ({sum(r['failed'] for r in ready)} refused) "
        f"in {results['streams_connect']['seconds']} s"
    )

    load = RestLoad([s.url for s in services], token, cases, args.rest_rate)
    writer = Writer(database_url, args.change_rate, args.users, spacing_s=0.0 if exact else CHANGE_SPACING_S, bursts=exact)
    memory = MemorySampler(services, sample_s)
    stop = threading.Event()
    t0 = time.monotonic()
    memory.sample(0.0)
    machine_at_start, clients_at_start = machine_cpu(), [cpu_seconds(c.proc.pid) for c in clients]
    threads = [
        threading.Thread(target=target, args=extra, name=name, daemon=True)
        for name, target, extra in (
            ("rest", load.run, (stop,)),
            ("writer", writer.run, (stop,)),
            ("memory", memory.run, (stop, t0)),
        )
    ]
    for thread in threads:
        thread.start()
    log(
        f"load for {args.minutes:g} min: {args.rest_rate:g} REST req/s, {args.change_rate:g} job changes/s, "
        f"{args.streams} streams; warm-up {warm_up:.0f} s, RSS every {sample_s:.0f} s"
    )
    progress_s = max(10.0, min(60.0, duration / 10))
    while (elapsed := time.monotonic() - t0) < duration:
        time.sleep(min(progress_s, duration - elapsed))
        latest = {s["pid"]: s["rss_mib"] for s in memory.samples}
        log(
            f"  {time.monotonic() - t0:5.0f} s: {sum(load.statuses.values()):,} requests ({load.failures} failed), "
            f"{len(writer.changes):,} changes, RSS {' / '.join(f'{v:.0f}' for v in latest.values())} MiB, "
            f"load avg {os.getloadavg()[0]:.2f}"
        )
    stop.set()
    for thread in threads:
        thread.join(60)
    memory.sample(time.monotonic() - t0)
    results["loadavg_during"] = os.getloadavg()
    (busy0, total0), (busy1, total1) = machine_at_start, machine_cpu()
    load_s = time.monotonic() - t0
    clients_cpu = sum(cpu_seconds(c.proc.pid) - before for c, before in zip(clients, clients_at_start, strict=True))
    results["cpu"] = {
        # Everything on the machine (other work included), in % of all cores.
        "machine_busy_percent": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
        "sse_clients_percent_of_a_core": round(100 * clients_cpu / load_s, 1),
    }
    log(f"load stopped after {time.monotonic() - t0:.0f} s; settling (up to {SETTLE_S:.0f} s)")

    reports, ids, missing, waited = settle(clients, database_url, schema, writer, SETTLE_S)
    _, events_for_changes = missing_changes(database_url, schema, writer.changes)
    results["rest"] = load.summary()
    results["changes"] = {
        "total": len(writer.changes),
        "inserts": sum(1 for c in writer.changes if c.kind == "insert"),
        "updates": sum(1 for c in writer.changes if c.kind != "insert"),
        "burst_transactions": writer.burst_transactions,
        "slow_transactions": writer.slow_transactions,
        "by_status": dict(Counter(c.status for c in writer.changes)),
        "writer_errors": len(writer.errors),
        "writer_errors_first": writer.errors[:10],
        "events_logged_for_them": events_for_changes,
        "missing": len(missing),
        "missing_first": [c.__dict__ for c in missing[:10]],
        "settle_seconds": waited,
        **(
            dict(zip(("jobs_out_of_order", "logged_twice"), out_of_order(database_url, schema, writer.changes), strict=True))
            if exact
            else {}
        ),
    }
    results["delivery"] = delivery(reports, ids, [r["ready"] for r in ready])
    results["memory"] = {
        "workers": memory.growth(duration, warm_up, last_window),
        "restarted": memory.restarted,
        "samples": memory.samples,
    }
    results["service_logs"] = service_log_lines(services)
    results["client_stderr"] = [line for c in clients for line in c.errors[:5]]


def criteria(results: dict[str, Any]) -> list[dict[str, Any]]:
    rest_ = results["rest"]
    connect = results["streams_connect"]
    streams = results["delivery"]["instances"]
    ended = sum(s["ended_by_server"] for s in streams)
    memory = results["memory"]
    changes = results["changes"]
    worst = max(memory["workers"], key=lambda w: w["growth"], default=None)
    delivered = all(s["complete"] == s["streams"] == s["reported"] for s in streams)
    exact = [
        {
            "criterion": "exact capture: every job change logged exactly once, in its job's order",
            "measured": f"{changes['jobs_out_of_order']} jobs logged otherwise than written; {changes['logged_twice']} changes "
            f"logged twice ({changes['burst_transactions']} bursts of {2 * BURST_JOBS} changes, "
            f"{changes['slow_transactions']} transactions committed {SLOW_S:g} s late)",
            "pass": changes["jobs_out_of_order"] == 0
            and changes["logged_twice"] == 0
            and changes["burst_transactions"] > 0
            and changes["slow_transactions"] > 0,
        }
    ]
    return [
        {
            "criterion": "error rate 0 (REST: every answer 2xx, no connection error)",
            "measured": f"{rest_['failures']} of {rest_['requests']:,} requests failed",
            "pass": rest_["failures"] == 0,
        },
        {
            "criterion": "every stream connects and is never ended by the server",
            "measured": f"{sum(connect['ready']):,} of {sum(connect['split']):,} connected; {ended} ended by the server",
            "pass": sum(connect["ready"]) == sum(connect["split"]) and ended == 0,
        },
        {"criterion": "no worker restarted", "measured": f"{len(memory['restarted'])} restarts", "pass": not memory["restarted"]},
        {
            "criterion": "every job change is in the event log",
            "measured": f"{changes['total'] - changes['missing']:,} of {changes['total']:,} logged"
            + (f"; writer errors: {changes['writer_errors']}" if changes["writer_errors"] else ""),
            "pass": changes["missing"] == 0 and changes["total"] > 0 and not changes["writer_errors"],
        },
        {
            "criterion": "every stream received every event logged after its first id",
            "measured": f"{sum(s['complete'] for s in streams):,} of {sum(s['streams'] for s in streams):,} streams complete; "
            f"received {sum(s['received_total'] for s in streams):,} of {sum(s['expected_total'] for s in streams):,}",
            "pass": delivered and results["delivery"]["events_logged"] > 0,
        },
        {
            "criterion": f"memory: no worker grows more than {MAX_GROWTH:.0%} after warm-up",
            "measured": (
                f"worst {worst['growth']:+.1%} (instance {worst['instance']}, pid {worst['pid']}: "
                f"{worst['warm_mib']:.1f} → {worst['last_max_mib']:.1f} MiB)"
            )
            if worst
            else "no samples",
            "pass": worst is not None and all(w["growth"] <= MAX_GROWTH for w in memory["workers"]),
        },
        *(exact if "jobs_out_of_order" in changes else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=1000, help="SSE streams, split over the two instances")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SOAK_DATABASE_URL"),
        help="a database of its own (default: a fresh embedded PostgreSQL in a temp dir)",
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rest-rate", type=float, default=30.0, help="REST requests per second, both instances together")
    parser.add_argument("--change-rate", type=float, default=10.0, help="job changes (inserts and updates) per second")
    parser.add_argument(
        "--capture",
        choices=sorted(CAPTURE_COMMANDS),
        default="exact",
        help="exact: change capture installed, the writer at a worker's pace with bursts and late commits; "
        f"notify: the NOTIFY trigger (sampling), {CHANGE_SPACING_S:g} s between the changes of one job",
    )
    parser.add_argument("--workers", type=int, help="gunicorn workers per instance (default: gunicorn.conf.py's)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the shared rate-limit storage")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where SOAK.md and soak.json go")
    args = parser.parse_args(argv)
    if not shutil.which("node"):
        parser.error("node is not installed (make soak installs it)")

    command = " ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "code": code_version(),
        "fd_limit": raise_fd_limit(),
        "loadavg_start": os.getloadavg(),
    }
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="admin-service-soak-")))
        os.chmod(workdir, 0o755)  # the embedded PostgreSQL runs as another OS user
        run_soak(args, stack, workdir, results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["criteria"] = criteria(results)
    results["pass"] = all(c["pass"] for c in results["criteria"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, args.out / "SOAK.md")
    for c in results["criteria"]:
        log(f"{'PASS' if c['pass'] else 'FAIL'}  {c['criterion']}: {c['measured']}")
    log(f"wrote {args.out / 'SOAK.md'} and {args.out / 'soak.json'} in {results['total_seconds']} s")
    return 0 if results["pass"] else 1


# --- the report -----------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(v) for v in row) + " |" for row in rows),
        "",
    ]


def rss_series(results: dict[str, Any], points: int = 11) -> tuple[list[str], list[list[Any]]]:
    """RSS of every worker at about `points` evenly spread moments (the nearest sample)."""
    samples = results["memory"]["samples"]
    workers = results["memory"]["workers"]
    end = max((s["t"] for s in samples), default=0)
    header = ["t (s)"] + [f"i{w['instance']} pid {w['pid']}" for w in workers]
    rows = []
    for k in range(points):
        target = end * k / (points - 1)
        row: list[Any] = [f"{target:.0f}"]
        for w in workers:
            own = [s for s in samples if s["pid"] == w["pid"]]
            nearest = min(own, key=lambda s: abs(s["t"] - target)) if own else None
            row.append(f"{nearest['rss_mib']:.1f}" if nearest else "—")
        rows.append(row)
    return header, rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m, s, r, d, ch = results["machine"], results["settings"], results["rest"], results["delivery"], results["changes"]
    lines = [
        "# Soak: two instances under mixed load",
        "",
        f"Run {results['date']} with `{results['command']}` ({results['total_seconds']:.0f} s in all); "
        f"written by `bench/soak.py` (`make soak`); service code {results['code']}. "
        f"Verdict: **{'PASS' if results['pass'] else 'FAIL'}**.",
        "",
        "## Criteria",
        "",
        *_table(
            ["criterion", "measured", "verdict"],
            [[c["criterion"], c["measured"], "**PASS**" if c["pass"] else "**FAIL**"] for c in results["criteria"]],
        ),
        "## Set-up",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}; Python {m['python']}; "
        f"{m['postgresql']}; fd limit {results['fd_limit']}; load average at start "
        f"{' / '.join(f'{v:.2f}' for v in results['loadavg_start'])}, at the end of the load "
        f"{' / '.join(f'{v:.2f}' for v in results['loadavg_during'])}; during the load the machine's cores were "
        f"{results['cpu']['machine_busy_percent']:g} % busy (all processes, other work included), the Node SSE clients "
        f"used {results['cpu']['sse_clients_percent_of_a_core']:g} % of a core.",
        f"- Packages: {', '.join(f'{k} {v}' for k, v in m['packages'].items())}. Load generators: {m['load_generator']}.",
        f"- Database: {results['database']}; dataset {results['dataset']['jobs']:,} jobs / {results['dataset']['users']:,} users "
        f"(bench/dataset.py, {results['dataset']['seconds']} s); migrations applied; NOTIFY trigger {s['notify_trigger']}.",
        f"- Service: 2 instances (separate ports, same database), gunicorn + gevent with gunicorn.conf.py, "
        f"{s['workers_per_instance']} workers per instance ({s['workers_source']}); rate limit {s['rate_limit']} "
        f"at {results['redis']['url']} ({results['redis']['state']}); other settings at their defaults.",
        f"- Load for {s['minutes']:g} min: {s['streams']:,} SSE streams (`events={s['stream_events']}`, split "
        f"{' + '.join(str(v) for v in results['streams_connect']['split'])}, connected in {results['streams_connect']['seconds']} s); "
        f"REST {s['rest_rate_per_s']:g} req/s open loop over {len(r['cases'])} cases alternating between instances; "
        f"{s['change_rate_per_s']:g} job changes/s, capture {s['capture']}: "
        + (
            f"no spacing between the changes of one job, a transaction of {2 * s['bursts']['jobs']:,} changes every "
            f"{s['bursts']['every_s']:g} s, one committed {s['bursts']['slow_s']:g} s late every {s['bursts']['slow_every_s']:g} s."
            if s["bursts"]
            else f"≥ {s['change_spacing_s']:g} s between changes of one job."
        ),
        f"- Memory: VmRSS of each worker every {s['sample_s']:g} s; warm-up {s['warm_up_s']:.0f} s; growth = max over the "
        f"last {s['last_window_s']:.0f} s against the value at the end of the warm-up.",
        "",
        "## REST",
        "",
        f"{r['requests']:,} requests, {r['failures']} failed (error rate {r['error_rate'] or 0:.4%}). "
        f"Statuses: {', '.join(f'{k}: {v:,}' for k, v in sorted(r['statuses'].items()))}; per instance: "
        + "; ".join(
            f"instance {i} {', '.join(f'{k}: {v:,}' for k, v in sorted(c.items()))}" for i, c in enumerate(r["by_instance"])
        )
        + ".",
        "",
        *_table(
            ["case", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [[c["case"], c["requests"], c["p50_ms"], c["p95_ms"], c["p99_ms"], c["max_ms"]] for c in r["cases"]],
        ),
        "Latency is counted from each request's slot in the schedule (open loop), so queueing in the load generator counts too.",
        "",
    ]
    if r["first_errors"]:
        lines += ["First failures:", ""]
        for e in r["first_errors"][:10]:
            idle = e.get("connection_idle_s")
            lines.append(
                f"- {e['at']}, instance {e['instance']}, `{e['path']}`: {e['status']}"
                + (f" on a keep-alive connection idle for {idle} s" if idle is not None else "")
                + f": `{e['body'][:200]}`"
            )
        lines.append("")
    lag = d["lag"]
    lines += [
        "## Job changes and event delivery",
        "",
        f"{ch['total']:,} job changes ({ch['inserts']:,} inserts, {ch['updates']:,} updates; "
        f"{', '.join(f'{k} {v:,}' for k, v in sorted(ch['by_status'].items()))}); {ch['total'] - ch['missing']:,} found in "
        f"the event log (same job, status and updated_at), {ch['missing']} missing. The log holds {d['events_logged']:,} "
        f"job-update/job-alert events (newest id {d['newest_id']:,}); capture and delivery caught up {ch['settle_seconds']} s "
        "after the load stopped.",
        "",
        *_table(
            [
                "instance",
                "streams",
                "complete",
                "expected min / max",
                "received min / max",
                "received / expected",
                "out of order",
                "ended by server",
                "error / reset events",
            ],
            [
                [
                    i,
                    f"{x['streams']:,}",
                    f"{x['complete']:,}",
                    f"{x['expected_min']:,} / {x['expected_max']:,}",
                    f"{x['received_min']:,} / {x['received_max']:,}",
                    f"{x['received_total']:,} / {x['expected_total']:,}",
                    x["out_of_order"],
                    x["ended_by_server"],
                    f"{x['error_events']} / {x['reset_events']}",
                ]
                for i, x in enumerate(d["instances"])
            ],
        ),
        "Expected per stream = events in `admin.job_events` with an id above the one the server declared when the "
        "stream connected; a stream is complete when it received exactly those, in increasing id order, up to the newest.",
        "",
        f"Delivery lag (arrival at the client − the job's `updated_at`, over {lag['events']:,} deliveries): "
        + (
            f"p50 {lag['p50_ms']} ms, p95 {lag['p95_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms."
            if lag["events"]
            else "—"
        ),
        "",
        "## Memory (VmRSS per worker, MiB)",
        "",
        *_table(
            ["instance", "pid", "start", "end of warm-up", "max, last window", "end", "max", "growth", "verdict", "CPU"],
            [
                [
                    w["instance"],
                    f"{w['pid']}{' (exited)' if w['exited'] else ''}",
                    w["start_mib"],
                    w["warm_mib"],
                    w["last_max_mib"],
                    w["end_mib"],
                    w["max_mib"],
                    f"{w['growth']:+.1%}",
                    "PASS" if w["growth"] <= MAX_GROWTH else "FAIL",
                    f"{w['cpu_percent']} %",
                ]
                for w in results["memory"]["workers"]
            ],
        ),
        "CPU: the worker's CPU time over the run, in % of one core.",
        "",
    ]
    header, rows = rss_series(results)
    lines += ["Series (nearest sample; every sample is in soak.json):", "", *_table(header, rows)]
    logs = results["service_logs"]
    lines += [
        "## Service logs",
        "",
        f"Warnings/errors logged by the services: {logs['levels'] or 'none'}.",
        "",
        *(f"- `{line}`" for line in logs["first"]),
    ]
    path.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
