"""The export's budgets (issue 13): CSV of the unfiltered list at >= 50,000 rows/s, worker RSS
growth <= 50 MB while exporting 1,000,000 rows, and the p95 of other REST requests on the same
worker within 2x of its value without an export.

    python -m bench.export --url postgresql://... [--jobs 1000000]   # a bench.dataset database

One gunicorn worker (WEB_CONCURRENCY=1: the export and the other requests share it, the case
the budget is about). Measured, in order:
1. baseline: `GET /admin/jobs?limit=50` and a job's details, one after another, for --seconds;
2. the export (CSV, unfiltered, streamed to /dev/null by a client reading as fast as it can):
   rows/s, the worker's RSS sampled every 100 ms (growth = max during - before), the worker's
   and PostgreSQL's CPU seconds; the same requests as in 1 sent meanwhile;
3. the NDJSON export, for its rows/s.
Writes bench/export.json and a section `bench.report` puts in bench/RESULTS.md (run.py runs
this case as well, after the REST phases).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.service import cpu_seconds, rss_mib, run_service  # noqa: E402

BUDGET_ROWS_PER_S = 50_000
BUDGET_RSS_GROWTH_MIB = 50
BUDGET_P95_RATIO = 2.0


def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    return statistics.quantiles(values, n=20)[-1]


def backend_cpu_seconds(engine: Any) -> float:
    """CPU seconds of this database's backends so far (from /proc: the server is on this machine)."""
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars().all()
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError):
            pass  # gone meanwhile
    return total


class OtherRequests:
    """Page views and details, one after another, timing each (ms), until stopped."""

    def __init__(self, url: str, headers: dict[str, str], job_ref: str) -> None:
        self.paths = [f"{url}/admin/jobs?limit=50&count=none", f"{url}/admin/jobs/{job_ref}"]
        self.headers = headers
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        i = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            resp = session.get(self.paths[i % 2], headers=self.headers, timeout=30)
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.errors += resp.status_code != 200
            i += 1

    def __enter__(self) -> OtherRequests:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def export_once(url: str, headers: dict[str, str], fmt: str, worker: int, engine: Any) -> dict[str, Any]:
    rss_before = rss_mib(worker)
    rss_max = rss_before
    cpu_before, db_before = cpu_seconds(worker), backend_cpu_seconds(engine)
    done = threading.Event()

    def sample() -> None:
        nonlocal rss_max
        while not done.is_set():
            rss_max = max(rss_max, rss_mib(worker))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    lines = size = 0
    with requests.get(f"{url}/admin/jobs/export", params={"format": fmt}, headers=headers, stream=True, timeout=600) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(1 << 20):
            size += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    rows = lines - 1 if fmt == "csv" else lines
    return {
        "format": fmt,
        "rows": rows,
        "bytes": size,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "rss_before_mib": round(rss_before, 1),
        "rss_max_mib": round(rss_max, 1),
        "rss_growth_mib": round(rss_max - rss_before, 1),
        "worker_cpu_s": round(cpu_seconds(worker) - cpu_before, 1),
        "postgres_cpu_s": round(backend_cpu_seconds(engine) - db_before, 1),
    }


def run_export(
    database_url: str, token: str, workdir: Path, seconds: float = 10, log: Callable[[str], None] = print
) -> dict[str, Any]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1), pool_size=2)
    headers = {"Authorization": f"Bearer {token}"}
    with engine.connect() as conn:
        job_ref = str(conn.execute(text("SELECT id FROM archive.analysis_jobs ORDER BY created_at DESC LIMIT 1")).scalar_one())
    env = {"WEB_CONCURRENCY": "1", "EXPORT_RATE_LIMIT": "1000 per minute", "EXPORT_MAX_ROWS": "100000000"}
    log("\n[export] one worker: other requests alone, then during a CSV export of every job")
    with run_service(database_url, workdir, env) as service:
        (worker,) = service.workers()
        with OtherRequests(service.url, headers, job_ref) as warm:
            time.sleep(2)
        with OtherRequests(service.url, headers, job_ref) as alone:
            time.sleep(seconds)
        with OtherRequests(service.url, headers, job_ref) as during:
            csv_run = export_once(service.url, headers, "csv", worker, engine)
        log(f"  csv: {csv_run}")
        ndjson_run = export_once(service.url, headers, "ndjson", worker, engine)
        log(f"  ndjson: {ndjson_run}")
    engine.dispose()
    base, loaded = p95(alone.latencies), p95(during.latencies)
    ratio = loaded / base if base and loaded else None
    result = {
        "csv": csv_run,
        "ndjson": ndjson_run,
        "other_requests": {
            "alone": {
                "requests": len(alone.latencies),
                "p50_ms": round(statistics.median(alone.latencies), 2),
                "p95_ms": round(base or 0, 2),
            },
            "during_export": {
                "requests": len(during.latencies),
                "p50_ms": round(statistics.median(during.latencies), 2),
                "p95_ms": round(loaded or 0, 2),
            },
            "p95_ratio": round(ratio, 2) if ratio else None,
            "errors": alone.errors + during.errors + warm.errors,
        },
        "budgets": {
            "csv_rows_per_s": [BUDGET_ROWS_PER_S, csv_run["rows_per_s"] >= BUDGET_ROWS_PER_S],
            "rss_growth_mib": [BUDGET_RSS_GROWTH_MIB, csv_run["rss_growth_mib"] <= BUDGET_RSS_GROWTH_MIB],
            "p95_ratio": [BUDGET_P95_RATIO, ratio is not None and ratio <= BUDGET_P95_RATIO],
        },
    }
    log(f"  other requests: {result['other_requests']}")
    return result


def markdown(result: dict[str, Any]) -> list[str]:
    """The export section of bench/RESULTS.md."""
    csv_run, other = result["csv"], result["other_requests"]
    verdict = {True: "met", False: "**missed**"}
    budgets = result["budgets"]
    return [
        "## Export (`GET /admin/jobs/export`, one worker)",
        "",
        f"CSV of the unfiltered list: {csv_run['rows']:,} rows, {csv_run['bytes'] / 1e6:,.0f} MB in {csv_run['seconds']} s; "
        f"worker CPU {csv_run['worker_cpu_s']} s, PostgreSQL CPU {csv_run['postgres_cpu_s']} s. "
        f"NDJSON: {result['ndjson']['rows_per_s']:,} rows/s.",
        "",
        "| budget | measured | verdict |",
        "|---|---|---|",
        f"| CSV ≥ {BUDGET_ROWS_PER_S:,} rows/s | {csv_run['rows_per_s']:,} rows/s | {verdict[budgets['csv_rows_per_s'][1]]} |",
        f"| worker RSS growth ≤ {BUDGET_RSS_GROWTH_MIB} MB | {csv_run['rss_growth_mib']} MiB "
        f"({csv_run['rss_before_mib']} → {csv_run['rss_max_mib']}) | {verdict[budgets['rss_growth_mib'][1]]} |",
        f"| other requests' p95 during the export ≤ {BUDGET_P95_RATIO:g}x | {other['during_export']['p95_ms']} ms against "
        f"{other['alone']['p95_ms']} ms alone ({other['p95_ratio']}x; {other['during_export']['requests']} requests) | "
        f"{verdict[budgets['p95_ratio'][1]]} |",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a bench.dataset database")
    parser.add_argument("--seconds", type=float, default=10, help="how long the baseline requests run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    from bench.run import admin_token

    engine = create_engine(args.url.replace("postgresql://", "postgresql+psycopg2://", 1))
    token = admin_token(engine)
    engine.dispose()
    with tempfile.TemporaryDirectory(prefix="admin-service-bench-export-") as workdir:
        result = run_export(args.url, token, Path(workdir), args.seconds)
    (args.out / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(markdown(result)))


if __name__ == "__main__":
    main()
