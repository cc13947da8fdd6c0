"""Stats once per deployment (jobs/stats.py): the capture leader's process computes and
publishes them, every worker of every instance serves the same figures, a worker computes
itself when no leader publishes; counts per status maintained from captured changes and
reconciled by a full count without counting a change twice or missing one."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.jobs.status import STATUSES, normalize
from admin_service.live.capture import lock_key
from admin_service.live.connection import libpq_dsn
from tests.support.factories import Data
from tests.support.live import ENV, EXACT_MODE, LEADER, Jobs, install_change_capture, wait_log, wait_until
from tests.support.service import RunningService, run_service
from tests.support.socketio import Probe
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for

P = "admin_service"
# Few connections: the test server is shared (each worker also holds its live loops' own).
SMALL = {**ENV, "DB_POOL_MAX": "4"}
FAST = {**SMALL, "JOB_STATS_INTERVAL_MS": "250", "STATS_RECONCILE_S": "1", "STATS_LEADER_WAIT_MS": "500"}


def table_counts(engine: Engine) -> dict[str, int]:
    """The overview's counts, by this test's own SQL over the fixture rows."""
    counts = dict.fromkeys(STATUSES, 0)
    total = 0
    with engine.connect() as conn:
        for status, n in conn.execute(text("SELECT status, count(*) FROM archive.analysis_jobs GROUP BY status")):
            total += n
            name = normalize(status)
            if name in counts:
                counts[name] += n
    return {"total": total, **counts}


def shown(stats: dict[str, Any]) -> dict[str, int]:
    return {k: stats["overview"][k] for k in ("total", *STATUSES)}


def get_stats(svc: RunningService, token: str, fresh: bool = False) -> dict[str, Any]:
    response = requests.get(
        f"{svc.url}/admin/jobs/stats", params={"fresh": "true"} if fresh else None, headers=bearer(token), timeout=10
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def delete_job(engine: Engine, job: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM archive.analysis_jobs WHERE id = :id"), {"id": job["id"]})


def counts_state(engine: Engine, settings: Settings) -> tuple[datetime | None, dict[str, int] | None]:
    with engine.connect() as conn:
        row = conn.execute(text(f'SELECT reconciled_at, drift FROM "{settings.admin_schema}".job_counts_state')).one()
    return row.reconciled_at, row.drift


def scrape(svc: RunningService, name: str, **labels: str) -> float:
    """The sum of a metric's samples (all workers: multiprocess mode) with these labels."""
    body = requests.get(f"{svc.url}/metrics", timeout=10).text
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@contextmanager
def exact_service(database_url: str, tmp_path: Path, engine: Engine, settings: Settings) -> Iterator[RunningService]:
    install_change_capture(engine, settings)
    with run_service(database_url, tmp_path, workers=1, env=FAST) as svc:
        wait_log(svc, EXACT_MODE)
        yield svc


def test_counts_follow_exact_capture_across_racing_reconciliations(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with exact_service(database_url, tmp_path, engine, settings) as svc:
        alive = [jobs.insert(status=s) for s in ("queued", "queued", "processing", "completed", "failed")]
        wait_until(lambda: shown(get_stats(svc, token, fresh=True)) == table_counts(engine), 15, "counts caught up")
        first_reconciled, _ = counts_state(engine, settings)

        # Inserts, status changes and deletes while the leader reconciles every second.
        stop = threading.Event()
        rng = random.Random(17)

        def write() -> None:
            while not stop.is_set():
                op = rng.random()
                if op < 0.4 or not alive:
                    alive.append(jobs.insert(status=rng.choice(["queued", "processing", "completed", "failed"])))
                elif op < 0.85:
                    jobs.set_status(rng.choice(alive), rng.choice(list(STATUSES)))
                else:
                    delete_job(engine, alive.pop(rng.randrange(len(alive))))

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        drifts: dict[datetime, Any] = {}
        try:
            # Several reconciliations while the rows change under them, each one's correction noted.
            def reconciled_thrice() -> bool:
                at, drift = counts_state(engine, settings)
                if at is not None and at != first_reconciled:
                    drifts[at] = drift
                return len(drifts) >= 3

            wait_until(reconciled_thrice, 20, "three reconciliations during the writes", every=0.05)
        finally:
            stop.set()
            writer.join(10)

        expected = table_counts(engine)
        stats = wait_until(
            lambda: (s := get_stats(svc, token, fresh=True)) and shown(s) == expected and s, 15, "counts equal the table's"
        )
        assert stats["overview"]["countsBasis"]["method"] == "maintained"
        assert stats["overview"]["countsBasis"]["capture"] == "exact"
        assert expected["total"] > 5  # the writer did write
        # Exact capture: the maintained counts were right at every reconciliation (a change
        # counted twice or missed across one would show as a correction).
        assert all(drift == {} for drift in drifts.values()), drifts


def test_reconciliation_corrects_a_drift_made_behind_captures_back(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with exact_service(database_url, tmp_path, engine, settings) as svc:
        for status in ("failed", "failed", "completed", "queued"):
            jobs.insert(status=status)
        wait_until(lambda: shown(get_stats(svc, token, fresh=True)) == table_counts(engine), 15, "counts caught up")
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE \"{settings.admin_schema}\".job_status_counts SET n = n + 5 WHERE status = 'failed'"))
        tampered_at = datetime.now().astimezone()

        def corrected() -> bool:
            at, drift = counts_state(engine, settings)
            return at is not None and at > tampered_at and drift == {"failed": 5}

        wait_until(corrected, 15, "a reconciliation that corrected the drift")
        stats = get_stats(svc, token, fresh=True)
        assert shown(stats) == table_counts(engine)
        assert stats["overview"]["failed"] == 2


def test_two_instances_compute_once_per_interval_and_serve_the_same_figures(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    interval_s = 0.5
    env = {**SMALL, "JOB_STATS_INTERVAL_MS": str(int(interval_s * 1000))}
    with ExitStack() as stack:
        for n in range(2):
            (tmp_path / f"i{n}").mkdir()
        instances = [stack.enter_context(run_service(database_url, tmp_path / f"i{n}", workers=2, env=env)) for n in range(2)]
        streams = [stack.enter_context(SSEClient(svc.url, token=token)) for svc in instances]
        Jobs(engine).insert(status="failed")

        def leader_computations() -> float:
            return sum(scrape(svc, f"{P}_stats_computations_total", basis="leader") for svc in instances)

        wait_until(lambda: leader_computations() >= 1, 15, "a first published figure")
        before, started = leader_computations(), time.monotonic()
        others_before = sum(scrape(svc, f"{P}_stats_computations_total", basis="fallback") for svc in instances)
        # Every stream gets job-stats for a few intervals.
        seen = [[e.data for e in stream.collect(6 * interval_s) if e.name == "job-stats"] for stream in streams]
        elapsed = time.monotonic() - started
        done = leader_computations() - before

        # Two instances with a listener each: about one computation per interval, not two.
        assert 1 <= done <= elapsed / interval_s + 2, (done, elapsed)
        assert sum(scrape(svc, f"{P}_stats_computations_total", basis="fallback") for svc in instances) == others_before
        assert all(seen), "each instance's stream got job-stats"
        computers = {figures["computedBy"]["process"] for stream in seen for figures in stream}
        assert len(computers) == 1  # one process computed what both instances sent
        assert {f["computedBy"]["basis"] for stream in seen for f in stream} == {"leader"}
        # Both instances sent the same figures (the same publications).
        stamps = [{f["computedAt"] for f in stream} for stream in seen]
        assert stamps[0] & stamps[1]
        rest = get_stats(instances[1], token)
        assert rest["computedBy"]["process"] in computers and rest["computedBy"]["basis"] == "leader"


def test_without_a_publishing_leader_a_worker_computes_itself_and_says_so(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    for status in ("failed", "completed", "queued"):
        jobs.insert(status=status)
    # A leader that holds the lock but never publishes (hung): the workers cannot lead either.
    stuck = psycopg2.connect(libpq_dsn(database_url))
    stuck.autocommit = True
    try:
        with stuck.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(settings.admin_schema),))
        with run_service(database_url, tmp_path, workers=2, env=FAST) as svc:
            stats = get_stats(svc, token)
            assert stats["computedBy"]["basis"] == "fallback"
            assert stats["overview"]["countsBasis"]["method"] == "counted"
            assert shown(stats) == table_counts(engine)
            wait_log(svc, "computing in this process")
            # The hung leader goes away: a worker leads and publishes again.
            stuck.close()
            wait_log(svc, LEADER)

            def from_leader() -> dict[str, Any] | None:
                figures = get_stats(svc, token)
                return figures if figures["computedBy"]["basis"] == "leader" else None

            back = wait_until(from_leader, 15, "figures from the leader")
            assert shown(back) == table_counts(engine)
    finally:
        stuck.close()


def test_rest_sse_and_socketio_serve_the_same_figures(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    env = {**SMALL, "JOB_STATS_INTERVAL_MS": "1000"}
    Jobs(engine).insert(status="completed")
    with run_service(database_url, tmp_path, workers=2, env=env) as svc, SSEClient(svc.url, token=token) as stream:
        probe = Probe(svc.url).connect(token)
        try:
            probe.call("subscribe:jobs")
            mark = probe.mark()
            # REST in the middle: what it serves was published before, and is sent on the streams
            # before or just after.
            events = stream.collect(2.5)
            rest = [get_stats(svc, token) for _ in range(3)]
            events += stream.collect(1.5)
            sse = [e.data for e in events if e.name == "job-stats"]
            sio = probe.matching("job-stats", since=mark)
        finally:
            probe.close()
    key = lambda f: (f["computedAt"], f["computedBy"]["process"])  # noqa: E731
    assert sse and sio
    assert {key(f) for f in sse} & {key(f) for f in sio}, "SSE and Socket.IO sent the same publications"
    same = {key(f): f for f in sse + sio}
    assert any(key(r) in same for r in rest), "REST served one of them"
    for figures in rest:
        if key(figures) in same:
            assert figures["overview"] == same[key(figures)]["overview"]
            assert figures["dailyMetrics"] == same[key(figures)]["dailyMetrics"]
