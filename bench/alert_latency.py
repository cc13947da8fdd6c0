"""Alert delivery latency: a job that exhausts its retries is committed -> its webhook arrives.

    python -m bench.alert_latency --url postgresql://postgres@127.0.0.1:5432/postgres [--alerts 100]

Makes a scratch database on that server, runs one instance under gunicorn as production does
(default settings but the channel: capture polling every CAPTURE_POLL_MS=500 without the NOTIFY
trigger, unless --trigger), a real webhook receiver that verifies each signature, and raises
`--alerts` retries_exhausted alerts one at a time at random moments (so they fall anywhere in
the poll phase). Prints p50/p95/p99/max of commit -> received, and of the alert's episode being
recorded (raised_at, the database clock) -> received, which is the notification path alone.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from admin_service.config import load_settings
from admin_service.db.archive_options import notify_trigger_ddl, run_ddl
from admin_service.db.engine import make_engine, sqlalchemy_url
from admin_service.db.fixtures import create_fixture_tables
from admin_service.db.migrations import upgrade
from tests.support.postgres import scratch_database
from tests.support.receivers import channels_json, http_receiver, webhook
from tests.support.service import run_service
from tests.support.settings import TEST_SECRET


def job_of(body: dict[str, Any]) -> str | None:
    """The job a retries_exhausted message is about (the failures also raise high_failure_rate)."""
    alert = body.get("alert") or {}
    return ((alert.get("data") or {}).get("job") or {}).get("job_id") if alert.get("type") == "retries_exhausted" else None


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def describe(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name}: n={len(ms)} p50={statistics.median(ms):.0f} ms p95={quantile(ms, 0.95):.0f} ms "
        f"p99={quantile(ms, 0.99):.0f} ms max={max(ms):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a PostgreSQL server (a scratch database is made on it)")
    parser.add_argument("--alerts", type=int, default=100)
    parser.add_argument("--trigger", action="store_true", help="install the NOTIFY trigger (capture wakes at once)")
    args = parser.parse_args()

    with scratch_database(sqlalchemy_url(args.url), f"alert_latency_{uuid.uuid4().hex[:8]}") as url, http_receiver() as hooks:
        setup = create_engine(url)
        with setup.begin() as conn:
            create_fixture_tables(conn)
        settings = load_settings({"JWT_SECRET": TEST_SECRET}, database_url=url)
        engine = make_engine(settings)
        upgrade(engine, settings)
        if args.trigger:
            run_ddl(engine, notify_trigger_ddl(settings))
        env = {"NOTIFY_CHANNELS": channels_json(webhook("ops", hooks)), "NOTIFY_WINDOW_S": "0", "LOG_LEVEL": "WARNING"}
        with tempfile.TemporaryDirectory() as folder, run_service(url, Path(folder), workers=None, env=env):
            time.sleep(3)  # leaders elected
            commit_to_received: list[float] = []
            commit_at: dict[str, float] = {}
            for n in range(args.alerts):
                time.sleep(random.uniform(0.05, 0.6))
                job_id = f"latency-{n}-{uuid.uuid4().hex[:6]}"
                with engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, retry_count, max_retries, "
                            "error_message, created_at, updated_at) VALUES (:id, :job_id, :user, 'failed', 3, 3, 'boom', now(), now())"
                        ),
                        {"id": str(uuid.uuid4()), "job_id": job_id, "user": str(uuid.uuid4())},
                    )
                commit_at[job_id] = time.time()
                got = hooks.wait_for(lambda r, j=job_id: job_of(r.body) == j, timeout=30)
                assert got[0].signature_ok
                commit_to_received.append(got[0].at - commit_at[job_id])
            with engine.connect() as conn:
                raised = {
                    row[0]: row[1].timestamp()
                    for row in conn.execute(
                        text(f"SELECT data->'job'->>'job_id', raised_at FROM \"{settings.admin_schema}\".alert_episodes")
                    )
                }
            by_job = {job_of(r.body): r.at for r in hooks.received}
            raised_to_received = [by_job[j] - raised[j] for j in commit_at]
        engine.dispose()
        setup.dispose()
    mode = "NOTIFY trigger" if args.trigger else "polling (CAPTURE_POLL_MS=500)"
    print(f"alert delivery latency, {args.alerts} alerts, capture by {mode}, one instance, default workers")
    print(describe("job committed -> webhook received", commit_to_received))
    print(describe("episode recorded (raised_at) -> webhook received", raised_to_received))


if __name__ == "__main__":
    main()
