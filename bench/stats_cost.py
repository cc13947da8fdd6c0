"""Database time spent on job statistics per interval, with 1, 2, 4... instances on one database.

Each instance is the production gunicorn (bench/service.py, WEB_CONCURRENCY workers each) with a
live listener (an SSE stream, which makes every worker of it want job-stats). After a warm-up
interval the script sums, over all instances, admin_service_stats_query_seconds_total (each
scrape of /metrics reads all workers of an instance: multiprocess mode) across a few intervals.
Stats are computed once per deployment (jobs/stats.py), so the figure must stay flat as
instances are added; before, every worker of every instance ran the queries each interval.

    .venv/bin/python -m bench.stats_cost --database-url postgresql://postgres@127.0.0.1:5432/yours1m --instances 1,2,4

The database must carry the service's schema (migrated here first) and the bench's admin
user (bench/dataset.py); it is written to (the service's own schema only).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, make_url

from bench.run import admin_token
from bench.service import BENCH_SECRET, run_service
from tests.support.sse_client import SSEClient

COUNTER = "admin_service_stats_query_seconds_total"
COMPUTATIONS = "admin_service_stats_computations_total"


def scrape(url: str) -> dict[tuple[str, str], float]:
    """(metric, label value) -> value for the stats counters of one instance."""
    found: dict[tuple[str, str], float] = {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        for name in (COUNTER, COMPUTATIONS):
            if line.startswith(name + "{"):
                head, value = line.rsplit(" ", 1)
                label = head.split('="', 1)[1].split('"', 1)[0]
                found[(name, label)] = found.get((name, label), 0.0) + float(value)
    return found


def total(samples: list[dict[tuple[str, str], float]], name: str, label: str | None = None) -> float:
    return sum(v for s in samples for (n, lab), v in s.items() if n == name and (label is None or lab == label))


def measure(
    database_url: str, instances: int, workers: int, interval_ms: int, intervals: int, token: str, fresh: int
) -> dict[str, Any]:
    env = {"WEB_CONCURRENCY": str(workers), "JOB_STATS_INTERVAL_MS": str(interval_ms), "DB_POOL_MAX": "4", "LOG_LEVEL": "WARNING"}
    interval_s = interval_ms / 1000
    with ExitStack() as stack:
        logs = Path(tempfile.mkdtemp(prefix="stats-cost-"))  # kept: the services' logs
        services = [stack.enter_context(run_service(database_url, logs, env)) for _ in range(instances)]
        streams = [stack.enter_context(SSEClient(s.url, token=token)) for s in services]
        for stream in streams:
            if stream.status != 200:
                raise SystemExit(f"stream refused: {stream.status} {stream.body[:300]!r} (logs in {logs})")
        for stream in streams:  # every instance is listening before the counters are read
            stream.wait_for(lambda e: e.name == "job-stats", timeout=30, what="job-stats")
        for stream in streams:
            stream.collect(interval_s)  # one more interval of warm-up (a new leader's first count)
        before = [scrape(s.url) for s in services]
        started = time.monotonic()
        received = 0
        deadline = started + intervals * interval_s
        while time.monotonic() < deadline:
            for stream in streams:
                received += sum(1 for e in stream.pump(0.05) if e.name == "job-stats")
        elapsed = time.monotonic() - started
        after = [scrape(s.url) for s in services]
        # fresh=true (computed by the answering worker, after the request began): its latency.
        took = []
        for _ in range(fresh):
            t0 = time.monotonic()
            response = requests.get(
                f"{services[0].url}/admin/jobs/stats",
                params={"fresh": "true"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            took.append((time.monotonic() - t0) * 1000)
            response.raise_for_status()
            basis = response.json()["data"]["overview"]["countsBasis"]["method"]
    periods = elapsed / interval_s
    row: dict[str, Any] = {
        "instances": instances,
        "workers": instances * workers,
        "intervals": periods,
        "events": received / periods,
    }
    took.sort()
    row["fresh_p50"] = took[len(took) // 2] if took else float("nan")
    row["fresh_p95"] = took[min(len(took) - 1, int(len(took) * 0.95))] if took else float("nan")
    row["counts"] = basis if took else "-"
    for part in ("compute", "fetch", "reconcile"):
        row[part] = (total(after, COUNTER, part) - total(before, COUNTER, part)) / periods
    row["db_s"] = (total(after, COUNTER) - total(before, COUNTER)) / periods
    for basis in ("leader", "local", "fallback"):
        row[f"n_{basis}"] = (total(after, COMPUTATIONS, basis) - total(before, COMPUTATIONS, basis)) / periods
    return row


INTERVAL_MS, INTERVALS, FRESH, WORKERS = 5000, 4, 20, 2


def run(database_url: str, token: str, instances: list[int], log: Any = print) -> dict[str, Any]:
    """The rows for bench/run.py (its database, migrated, with the bench's admin)."""
    log(f"\n[stats cost] {', '.join(map(str, instances))} instance(s) x {WORKERS} workers, JOB_STATS_INTERVAL_MS={INTERVAL_MS}")
    rows = []
    for n in instances:
        row = measure(database_url, n, WORKERS, INTERVAL_MS, INTERVALS, token, FRESH)
        log(
            f"  {n} instance(s): {row['db_s'] * 1000:.1f} ms of database time per interval, "
            f"{row['n_leader']:.2f} leader / {row['n_local']:.2f} local / {row['n_fallback']:.2f} fallback computations per interval"
        )
        rows.append(row)
    return {"interval_ms": INTERVAL_MS, "workers_per_instance": WORKERS, "rows": rows}


def markdown(cost: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Stats once per deployment",
        "",
        f"Database time spent on job statistics per interval (JOB_STATS_INTERVAL_MS={cost['interval_ms']}), summed over "
        f"every instance's `{COUNTER}` ({cost['workers_per_instance']} workers per instance, one SSE listener on each "
        "instance; `bench/stats_cost.py`). Before, each worker of each instance ran the queries every interval: the "
        "figure grew with the workers. Now it must stay flat.",
        "",
        "| instances | workers | DB ms / interval | compute | fetch | reconcile | leader / interval | local / interval | "
        "fallback / interval | job-stats events / interval / stream | fresh=true p50 / p95 ms | counts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cost["rows"]:
        lines.append(
            f"| {r['instances']} | {r['workers']} | {r['db_s'] * 1000:.1f} | {r['compute'] * 1000:.1f} | {r['fetch'] * 1000:.1f} | "
            f"{r['reconcile'] * 1000:.1f} | {r['n_leader']:.2f} | {r['n_local']:.2f} | {r['n_fallback']:.2f} | "
            f"{r['events'] / r['instances']:.2f} | {r['fresh_p50']:.1f} / {r['fresh_p95']:.1f} | {r['counts']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--instances", default="1,2,4", help="comma-separated instance counts")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--interval-ms", type=int, default=5000, help="JOB_STATS_INTERVAL_MS")
    parser.add_argument("--intervals", type=int, default=4, help="intervals measured per row")
    parser.add_argument("--fresh", type=int, default=20, help="fresh=true requests timed per row (one after another)")
    args = parser.parse_args()
    from admin_service.config import load_settings
    from admin_service.db.migrations import upgrade

    engine = create_engine(make_url(args.database_url).set(drivername="postgresql+psycopg2"))
    upgrade(engine, load_settings({"JWT_SECRET": BENCH_SECRET}, database_url=args.database_url))
    token = admin_token(engine)
    rows = [
        measure(args.database_url, int(n), args.workers, args.interval_ms, args.intervals, token, args.fresh)
        for n in args.instances.split(",")
    ]
    print(f"stats database time per interval (JOB_STATS_INTERVAL_MS={args.interval_ms}, one SSE listener per instance)")
    print(
        f"{'instances':>9} {'workers':>7} {'intervals':>9} {'db ms/interval':>14} {'compute':>8} {'fetch':>7} "
        f"{'reconcile':>9} {'leader/int':>10} {'local/int':>9} {'fallback/int':>12} {'events/int':>10} "
        f"{'fresh p50':>9} {'fresh p95':>9} counts"
    )
    for r in rows:
        print(
            f"{r['instances']:>9} {r['workers']:>7} {r['intervals']:>9.1f} {r['db_s'] * 1000:>14.1f} {r['compute'] * 1000:>8.1f} "
            f"{r['fetch'] * 1000:>7.1f} {r['reconcile'] * 1000:>9.1f} {r['n_leader']:>10.2f} {r['n_local']:>9.2f} "
            f"{r['n_fallback']:>12.2f} {r['events']:>10.2f} {r['fresh_p50']:>9.1f} {r['fresh_p95']:>9.1f} {r['counts']}"
        )


if __name__ == "__main__":
    main()
