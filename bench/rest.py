"""REST cases: wrk (a compiled load generator, one thread, its own process) against the service,
sequential (1 connection) and concurrent (N connections), and the database floor of each case
(EXPLAIN ANALYZE of the very statements the endpoint runs, captured from the app in-process)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine, event, text

BENCH = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH / "wrk.lua"


@dataclass
class Case:
    name: str
    group: str  # stats / list / sort / deep / one
    paths: list[str]
    budget_p95_ms: float | None = None
    budget_label: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _q(path: str, **params: Any) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def build_cases(engine: Engine, client: Any, headers: dict[str, str], sample: int = 200) -> list[Case]:
    """Every case of the issue, with real ids and a real deep cursor from this dataset."""
    with engine.connect() as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                text(
                    "SELECT id FROM archive.analysis_jobs TABLESAMPLE SYSTEM (2) REPEATABLE (7) "
                    "WHERE status = 'completed' AND result_id IS NOT NULL LIMIT :n"
                ),
                {"n": sample},
            )
        ]
        if len(ids) < 10:
            ids = [
                str(r[0])
                for r in conn.execute(
                    text("SELECT id FROM archive.analysis_jobs WHERE result_id IS NOT NULL ORDER BY id LIMIT :n"), {"n": sample}
                )
            ]
        total = conn.execute(text("SELECT count(*) FROM archive.analysis_jobs")).scalar_one()
    deep_page = min(2000, max(2, total // 50 - 1))
    # The cursor that page `deep_page` is reached with: nextCursor of the page before it.
    resp = client.get(_q("/admin/jobs", page=deep_page - 1, limit=50, count="none"), headers=headers)
    cursor = resp.get_json()["data"]["pagination"]["nextCursor"]
    today = datetime.now(UTC).date()
    j = "/admin/jobs"
    cases = [
        Case(
            "stats warm",
            "stats",
            ["/admin/jobs/stats"],
            50,
            "p95 ≤ 50 ms",
            "the shared per-process figures (at most JOB_STATS_INTERVAL_MS old)",
        ),
        Case(
            "stats cold",
            "stats",
            [_q("/admin/jobs/stats", fresh="true")],
            150,
            "p95 ≤ 150 ms",
            "fresh=true: every request recomputes (concurrent ones share one computation)",
        ),
        Case("list page 1", "list", [_q(j, limit=50)], 20, "p95 ≤ 20 ms", "no filter, count=exact (default)"),
        Case("list status=failed", "list", [_q(j, limit=50, status="failed")], 20, "p95 ≤ 20 ms"),
        Case(
            "list assessment_name=IQ",
            "list",
            [_q(j, limit=50, assessment_name="IQ")],
            100,
            "p95 ≤ 100 ms",
            "partial, case-insensitive text filter",
        ),
        Case(
            "list user_email=user4242",
            "list",
            [_q(j, limit=50, user_email="user4242")],
            100,
            "p95 ≤ 100 ms",
            "partial, case-insensitive text filter",
        ),
        Case(
            "list date range (7 days)",
            "list",
            [
                _q(
                    j,
                    limit=50,
                    date_from=(today - timedelta(days=37)).isoformat(),
                    date_to=(today - timedelta(days=31)).isoformat(),
                )
            ],
            20,
            "p95 ≤ 20 ms",
        ),
    ]
    for sort in ("created_at", "updated_at", "completed_at", "status", "priority"):
        cases.append(
            Case(
                f"list sort_by={sort}",
                "sort",
                [_q(j, limit=50, sort_by=sort)],
                30,
                "p95 ≤ 30 ms",
                "DESC (the default order), no filter",
            )
        )
    cases += [
        Case(
            f"list page {deep_page} (offset)",
            "deep",
            [_q(j, limit=50, page=deep_page)],
            None,
            "",
            "OFFSET paging: reported, no budget",
        ),
        Case(f"list page {deep_page} (cursor)", "deep", [_q(j, limit=50, cursor=cursor)], 20, "p95 ≤ 20 ms"),
        Case(
            "details",
            "one",
            [f"/admin/jobs/{i}" for i in ids],
            5,
            "p95 ≤ 5 ms; ≥ 1,000 req/s concurrent",
            f"{len(ids)} different jobs, round-robin",
        ),
        Case(
            "results",
            "one",
            [f"/admin/jobs/{i}/results" for i in ids],
            10,
            "p95 ≤ 10 ms",
            f"{len(ids)} different jobs (~2 KB JSON result each), round-robin",
        ),
        Case(
            "unknown id",
            "one",
            # Well-formed ids no job has: auth, routing, one index probe and the 404 envelope, the
            # cost every request pays (uuid4 of a fixed seed: the same ids every run).
            [f"/admin/jobs/{uuid.UUID(int=(i * 0x9E3779B97F4A7C15 + 1) % 2**128, version=4)}" for i in range(len(ids))],
            None,
            "",
            "a job id that does not exist: 404 expected (what a request costs without a job to show)",
            extra={"expect_status": 404},
        ),
    ]
    return cases + triage_cases(today)


def triage_cases(today: Any) -> list[Case]:
    """Failure triage and trends (issue 13): each as a dashboard asks it (figures shared per
    range for TRIAGE_SHARE_MS) and with fresh=true (every request computes: the cost of
    one computation, what the first request of each interval pays)."""
    failures, trends = "/admin/jobs/failures", "/admin/jobs/trends"

    def days(n: int) -> dict[str, str]:
        return {"from": (today - timedelta(days=n - 1)).isoformat(), "to": today.isoformat()}

    shapes = [
        ("failures 7 d", failures, days(7), 100),
        ("failures 90 d", failures, days(90), 300),
        ("trends 30 d by day", trends, {**days(30), "bucket": "day"}, 100),
        ("trends 7 d by hour", trends, {**days(7), "bucket": "hour"}, 100),
    ]
    # The shared cases first: a fresh case's concurrent run leaves computations running in the
    # workers after wrk stops, which would slow whatever case comes next.
    shared = [
        Case(name, "triage", [_q(path, **params)], budget, f"p95 ≤ {budget} ms", "shared per range and interval")
        for name, path, params, budget in shapes
    ]
    fresh = [
        Case(f"{name} fresh", "triage", [_q(path, **params, fresh="true")], None, "", "fresh=true: computed per request")
        for name, path, params, _ in shapes
    ]
    return shared + fresh


# --- the database floor -----------------------------------------------------------------


class StatementCapture:
    """The statements the app sends while `active` (SQLAlchemy's before_cursor_execute)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.active = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if self.active:
            self.statements.append((statement, parameters))

    def capture(self, call: Callable[[], Any]) -> list[tuple[str, Any]]:
        self.statements = []
        self.active = True
        try:
            call()
        finally:
            self.active = False
        return list(self.statements)


def explain_ms(engine: Engine, statements: list[tuple[str, Any]], runs: int = 7) -> dict[str, Any]:
    """Median over `runs` of the summed planning + execution time the server reports (TIMING OFF:
    per-node clocks would inflate scans of many rows), then one timed run for the plan summary."""
    if not statements:
        return {"ms": 0.0, "statements": 0, "plans": []}
    raw = engine.raw_connection()
    totals: list[float] = []
    plans: list[str] = []
    try:
        cur = raw.cursor()
        for run in range(runs + 2):
            total = 0.0
            for statement, params in statements:
                if statement.lstrip().upper().startswith("SET "):
                    cur.execute(statement, params)  # a setting of the statements that follow (SET LOCAL work_mem)
                    continue
                timing = "ON" if run == runs + 1 else "OFF"
                cur.execute(f"EXPLAIN (ANALYZE, TIMING {timing}, FORMAT JSON) " + statement, params)
                doc = cur.fetchone()[0][0]
                total += doc["Planning Time"] + doc["Execution Time"]
                if run == runs + 1:
                    plans.append(_plan_summary(doc["Plan"]))
            raw.rollback()
            if 0 < run <= runs:  # the first run warms the caches as the measured requests had
                totals.append(total)
    finally:
        raw.close()
    return {"ms": round(statistics.median(totals), 3), "statements": len(statements), "plans": plans}


def _plan_summary(plan: dict[str, Any], depth: int = 0) -> str:
    name = plan["Node Type"]
    if plan.get("Index Name"):
        name += f" {plan['Index Name']}"
    elif plan.get("Relation Name"):
        name += f" {plan['Relation Name']}"
    parts = [f"{name} ({plan.get('Actual Total Time', 0):.1f} ms, {plan.get('Actual Rows', 0)} rows)"]
    for child in plan.get("Plans", [])[:3]:
        if depth < 3:
            parts.append(_plan_summary(child, depth + 1))
    return parts[0] + (" <- " + " | ".join(parts[1:]) if len(parts) > 1 else "")


def database_floor(
    engine: Engine, capture: StatementCapture, client: Any, headers: dict[str, str], case: Case, runs: int = 7
) -> dict[str, Any]:
    path = case.paths[0]
    client.get(path, headers=headers)  # warm: auth cache, compiled statement cache
    statements = capture.capture(lambda: client.get(path, headers=headers))
    return explain_ms(engine, statements, runs)


# --- the load generator -------------------------------------------------------------------


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return path


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True).stdout + ""
    return out.splitlines()[0].strip() if out else "wrk"


def run_wrk(
    url: str,
    token: str,
    paths: list[str],
    connections: int,
    seconds: float,
    timeout_s: int = 10,
    *,
    expect_status: int | None = None,
    statuses: bool = False,
) -> dict[str, Any]:
    """One wrk run. `expect_status` (>= 400): the answer every request should get (wrk counts
    those as errors; here a request that got anything else is one). `statuses`: count the
    answers by status code too (costs wrk time; for runs whose errors must be explained)."""
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as f:
        f.write("\n".join(paths) + "\n")
        paths_file = f.name
    try:
        proc = subprocess.run(
            [
                wrk_binary(),
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={timeout_s}s",
                "-s",
                str(WRK_SCRIPT),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + timeout_s + 30,
            env={
                "BENCH_TOKEN": token,
                "BENCH_PATHS": paths_file,
                "PATH": "/usr/bin:/bin",
                **({"BENCH_STATUSES": "1"} if statuses else {}),
            },
        )
    finally:
        Path(paths_file).unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line)
    seconds_run = raw["duration_us"] / 1e6
    transport_errors = raw["errors_connect"] + raw["errors_read"] + raw["errors_write"] + raw["errors_timeout"]
    if expect_status is not None:
        errors = transport_errors + (raw["requests"] - raw["errors_status"])
    else:
        errors = transport_errors + raw["errors_status"]
    return {
        "connections": connections,
        "requests": raw["requests"],
        "seconds": round(seconds_run, 2),
        "rps": round(raw["requests"] / seconds_run, 1) if seconds_run else 0.0,
        "p50_ms": raw["p50"] / 1000,
        "p90_ms": raw["p90"] / 1000,
        "p95_ms": raw["p95"] / 1000,
        "p99_ms": raw["p99"] / 1000,
        "mean_ms": round(raw["mean"] / 1000, 3),
        "max_ms": raw["max"] / 1000,
        "errors": errors,
        "non_2xx": raw["errors_status"],
        **({"statuses": raw.get("statuses", {})} if statuses else {}),
    }


def measure_case(
    url: str,
    token: str,
    case: Case,
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
    warm_up: bool = True,
    statuses: bool = False,
    label: str = "",
) -> dict[str, Any]:
    expect = case.extra.get("expect_status")
    if warm_up:
        run_wrk(url, token, case.paths, 1, 1, expect_status=expect)  # the first requests of a case are not its steady state
    sequential = run_wrk(url, token, case.paths, 1, seconds, expect_status=expect, statuses=statuses)
    concurrent = run_wrk(url, token, case.paths, concurrency, seconds, expect_status=expect, statuses=statuses)
    log(
        f"{label}  {case.name:32s} seq p50 {sequential['p50_ms']:7.2f} p95 {sequential['p95_ms']:7.2f} p99 {sequential['p99_ms']:7.2f} ms "
        f"{sequential['rps']:7.0f}/s | c{concurrency} p95 {concurrent['p95_ms']:7.2f} ms {concurrent['rps']:7.0f}/s"
        + (f"  ERRORS {sequential['errors'] + concurrent['errors']}" if sequential["errors"] + concurrent["errors"] else "")
        + (f" statuses {sequential['statuses']} / {concurrent['statuses']}" if statuses else "")
    )
    return {"sequential": sequential, "concurrent": concurrent}


def run_rest(
    url: str,
    token: str,
    cases: list[Case],
    floors: dict[str, dict[str, Any]],
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
    warm_up: bool = True,
    statuses: bool = False,
    compare_with: Any = None,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """Every case against `url`; with `compare_with` (a bench.compare.Target) each case is also
    run against it, interleaved over `rounds`, and the medians of both are kept."""
    from bench import compare

    out = []
    ours = compare.Target("ours", url, token)
    for case in cases:
        started = time.monotonic()
        comparison = None
        if compare_with is None:
            figures = measure_case(url, token, case, seconds, concurrency, log, warm_up, statuses)
        else:

            def measure(target_url: str, target_token: str, case: Case = case) -> dict[str, Any]:
                label = "ours  " if target_url == url else "theirs"
                return measure_case(target_url, target_token, case, seconds, concurrency, log, warm_up, statuses, label)

            figures, comparison = compare.interleaved(measure, ours, compare_with, rounds)
        floor = floors.get(case.name, {"ms": None})
        seq_p50 = figures["sequential"]["p50_ms"]
        out.append(
            {
                "case": case.name,
                "group": case.group,
                "note": case.note,
                "path": case.paths[0],
                "paths": len(case.paths),
                "budget_p95_ms": case.budget_p95_ms,
                "budget": case.budget_label,
                **figures,
                "db_ms": floor.get("ms"),
                "db_statements": floor.get("statements"),
                "db_plans": floor.get("plans", []),
                "overhead_ratio": round(seq_p50 / floor["ms"], 1) if floor.get("ms") else None,
                "wall_s": round(time.monotonic() - started, 1),
                # 1-minute load average after the case: above ~2 means other work shared the 2 cores.
                "loadavg_1m": round(os.getloadavg()[0], 2),
                **({"compare": comparison} if comparison else {}),
            }
        )
    return out
