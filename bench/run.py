"""The benchmark: dataset, the service under gunicorn (gevent), wrk against every REST case,
the database floor of each, live streams; writes bench/results.json, bench/RESULTS.md and
bench/latency.png.

    make bench                                  # 1,000,000 jobs in a fresh embedded PostgreSQL
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench make bench
    .venv/bin/python -m bench.run --jobs 2000 --users 200 --seconds 1 --smoke --out /tmp/b  # seconds

BENCH_DATABASE_URL names a database of its own (created when missing); its archive tables are
replaced by the dataset unless they hold rows the benchmark did not write (then it stops).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from admin_service.db.engine import sqlalchemy_url  # noqa: E402
from bench import compare, dataset, rest  # noqa: E402
from bench.service import BENCH_SECRET, run_service  # noqa: E402

# What a smoke run (tests/test_bench_smoke.py) drives with wrk: one case of each kind.
SMOKE_CASES = ("stats cold", "list assessment_name=IQ", "details")


def log(msg: str) -> None:
    print(msg, flush=True)


def ensure_database(url: str) -> str:
    """Create the named database when it does not exist (never touches another one)."""
    url = sqlalchemy_url(url)
    parsed = make_url(url)
    name = parsed.database or "bench"
    admin = create_engine(parsed.set(database="postgres").render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                log(f"created database {name}")
    finally:
        admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def open_database(stack: ExitStack, given_url: str | None, workdir: Path) -> tuple[str, str]:
    """The given database (created when missing), else a fresh embedded PostgreSQL in workdir
    stopped when the stack closes; (its URL, how it was chosen)."""
    if given_url:
        database_url = ensure_database(given_url)
        return database_url, "given: " + make_url(database_url).render_as_string(hide_password=True)
    from admin_service.db.embedded import start_embedded

    log(f"starting a fresh embedded PostgreSQL in {workdir / 'pgdata'}")
    server, database_url = start_embedded(workdir / "pgdata")
    stack.callback(server.cleanup)
    return database_url, "embedded (pgserver), fresh"


def machine_info(engine: Any, load_generator: str | None = None) -> dict[str, Any]:
    with engine.connect() as conn:
        pg = conn.execute(text("SELECT version()")).scalar_one()
        settings = {
            name: conn.execute(text(f"SHOW {name}")).scalar_one()
            for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")
        }
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), 0)
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("flask", "flask-smorest", "gunicorn", "gevent", "SQLAlchemy", "psycopg2-binary", "python-socketio"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg.split(" on ")[0],
        "postgresql_settings": settings,
        "packages": versions,
        "load_generator": load_generator or rest.wrk_version(),
        "loadavg_start": os.getloadavg(),
    }


def database_mb(engine: Any) -> int:
    """What the database holds on disk (tables, indexes, TOAST), in MiB."""
    with engine.connect() as conn:
        return round(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one() / 2**20)


def admin_token(engine: Any) -> str:
    from admin_service.auth import sign_token
    from admin_service.config import load_settings

    settings = load_settings({"JWT_SECRET": BENCH_SECRET})
    with engine.connect() as conn:
        admin_id = conn.execute(text("SELECT id FROM auth.users WHERE email = 'admin@example.com'")).scalar_one()
    return sign_token(settings, str(admin_id), ttl_seconds=6 * 3600)


def install_indexes(database_url: str, drop: bool = False) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": BENCH_SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", "db", "install-indexes", *(["--drop"] if drop else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"install-indexes failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def rest_phase(label: str, database_url: str, engine: Any, token: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from admin_service import create_app
    from admin_service.config import load_settings

    # The in-process app only finds each case's statements. Its shared figures and auth lookups
    # are kept long enough that a captured request runs what a request runs in the steady state
    # (not, now and then, a stats computation or a user lookup too).
    settings = load_settings(
        {
            "JWT_SECRET": BENCH_SECRET,
            "RATE_LIMIT": "100000000 per minute",
            # Its statements are the case's own: the shared rate-limit store's call (measured
            # under gunicorn with the rest) stays out of them.
            "RATE_LIMIT_STORAGE_URI": "memory://",
            "LOG_LEVEL": "WARNING",
            "JOB_STATS_INTERVAL_MS": "3600000",
            "AUTH_CACHE_SECONDS": "300",
        },
        database_url=database_url,
    )
    app = create_app(settings, engine)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    capture = rest.StatementCapture(engine)
    cases = rest.build_cases(engine, client, headers)
    if args.only:
        cases = [c for c in cases if any(o in c.name for o in args.only)]
    elif args.smoke:
        cases = [c for c in cases if c.name in SMOKE_CASES]
    log(f"\n[{label}] database floor (EXPLAIN ANALYZE of each case's statements, median of {args.explain_runs})")
    floors = {}
    for case in cases:
        floors[case.name] = rest.database_floor(engine, capture, client, headers, case, args.explain_runs)
        log(f"  {case.name:32s} {floors[case.name]['ms']:8.2f} ms in {floors[case.name]['statements']} statement(s)")
    log(f"[{label}] service under gunicorn (default workers), wrk -t1, {args.seconds:g} s per run")
    with run_service(database_url, workdir) as service, compare.comparison(args, database_url, token, workdir) as other:
        workers = len(service.workers())
        if other is not None:
            log(f"[{label}] interleaved with {other.label} ({other.url}), {args.compare_rounds} round(s) per case")
        results = rest.run_rest(
            service.url,
            token,
            cases,
            floors,
            args.seconds,
            args.concurrency,
            log,
            warm_up=not args.smoke,
            # A smoke run's errors must say what they were (it fails the suite on any).
            statuses=args.smoke,
            compare_with=other,
            rounds=args.compare_rounds,
        )
    phase = {"label": label, "workers": workers, "concurrency": args.concurrency, "seconds": args.seconds, "cases": results}
    compare.print_ratios(phase, log)
    return phase


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a database of its own (default: a fresh embedded PostgreSQL in a temp dir)",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8, help="wrk duration of each run")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the concurrent runs")
    parser.add_argument("--explain-runs", type=int, default=7)
    parser.add_argument("--sse", default="1000,10000", help="SSE stream counts ('' to skip)")
    parser.add_argument("--sockets", default="1000", help="Socket.IO socket counts ('' to skip)")
    parser.add_argument("--updates", type=int, default=20, help="job updates per latency run")
    parser.add_argument(
        "--capture-modes",
        default="poll,trigger,exact",
        help="capture modes whose latency the live cases measure, in order: poll (nothing installed), trigger "
        "(db install-notify-trigger), exact (db install-change-capture; skipped where that command does not exist)",
    )
    parser.add_argument(
        "--stats-cost",
        default="1,2,4",
        help="instance counts whose stats database time per interval is measured (bench/stats_cost.py; '' to skip)",
    )
    parser.add_argument("--no-indexes-phase", action="store_true", help="skip the run with db install-indexes")
    parser.add_argument(
        "--indexes-phase-only",
        action="store_true",
        help="only the run with db install-indexes (what the 10M budgets are judged on): a kept dataset keeps its indexes",
    )
    parser.add_argument("--only", nargs="*", help="only REST cases whose name contains one of these")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="quick run for the test suite: 3 REST cases, no warm-up runs, no report files unless --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench",
        help="where results.json, RESULTS.md, latency.png go (results-10M.json, RESULTS-10M.md, latency-10M.png "
        "for a dataset larger than 1,000,000 jobs: each report then shows the growth between the sizes found there)",
    )
    compare.add_arguments(parser)
    args = parser.parse_args(argv)
    compare.check_arguments(parser, args)
    if args.indexes_phase_only and args.no_indexes_phase:
        parser.error("--indexes-phase-only and --no-indexes-phase leave nothing to run")
    from bench.live import parse_capture_modes

    try:
        parse_capture_modes(args.capture_modes)
    except ValueError as exc:
        parser.error(f"--capture-modes: {exc}")

    fd_limit = raise_fd_limit()
    started = time.monotonic()
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="admin-service-bench-")))
        os.chmod(workdir, 0o755)
        database_url, results["database"] = open_database(stack, args.database_url, workdir)
        engine = create_engine(database_url, pool_size=4)
        stack.callback(engine.dispose)
        results["machine"] = machine_info(engine)
        results["machine"]["fd_limit"] = fd_limit

        log(f"dataset: {args.jobs:,} jobs, {args.users:,} users")
        # Never the indexes of an earlier run: the first phase measures the tables as they are.
        info = dataset.generate(database_url, args.jobs, args.users, log=log)
        if info.get("kept") and not args.indexes_phase_only:
            install_indexes(database_url, drop=True)
        results["dataset"] = info
        results["disk"] = {"database_mb_after_dataset": database_mb(engine)}
        from admin_service.config import load_settings
        from admin_service.db.migrations import upgrade

        upgrade(engine, load_settings({"JWT_SECRET": BENCH_SECRET}, database_url=database_url))
        token = admin_token(engine)

        results["rest"] = (
            [] if args.indexes_phase_only else [rest_phase("without indexes", database_url, engine, token, args, workdir)]
        )
        if not args.no_indexes_phase:
            t0 = time.monotonic()
            ddl_output = install_indexes(database_url)
            results["indexes"] = {"seconds": round(time.monotonic() - t0, 1), "output": ddl_output}
            log(f"\ndb install-indexes ({results['indexes']['seconds']} s):\n{ddl_output}")
            results["rest"].append(rest_phase("with install-indexes", database_url, engine, token, args, workdir))

        if not args.smoke and not args.only:
            from bench import export

            results["export"] = export.run_export(database_url, token, workdir, log=log)

        if args.stats_cost and not args.smoke:
            from bench import stats_cost

            results["stats_cost"] = stats_cost.run(database_url, token, [int(n) for n in args.stats_cost.split(",")], log=log)

        from bench import live

        results["live"] = live.run_live(database_url, engine, token, args, workdir, log)
        results["disk"]["database_mb_at_end"] = database_mb(engine)
        results["machine"]["loadavg_end"] = os.getloadavg()
        results["total_seconds"] = round(time.monotonic() - started, 1)

    from bench import report

    if args.smoke and args.out == ROOT / "bench":
        log("smoke run: no report written")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = report.size_suffix(args.jobs)
    paths = [args.out / f"results{suffix}.json", args.out / f"RESULTS{suffix}.md", args.out / f"latency{suffix}.png"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    report.write_markdown(results, paths[1])
    report.write_chart(results, paths[2])
    log(f"\nwrote {', '.join(str(p) for p in paths)} in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
