"""The benchmark dataset: deterministic, production-shaped, generated inside PostgreSQL.

    python -m bench.dataset --url postgresql://... [--jobs 1000000] [--users 100000]

Shape (for --jobs N, --users U):
- U users (`user<k>@example.com`, ids md5('user-<k>')) plus the demo admins of
  admin_service.db.fixtures (admin@example.com is a superadmin);
- N jobs, stored in created_at order as an append-only table is: the oldest 97 % are
  finished (completed 90/97, failed 6/97, cancelled 1/97 of them, chosen by a hash of the row
  number), created over `--days` (180) days with a density that rises linearly to three times
  the oldest day's (denser recently); the newest 3 % are a backlog of the last hour: 1 %
  processing, then 2 % queued (FIFO order);
- one result row per completed job (test_data, test_result, raw_responses: about 2 KB of JSON);
- 7 days of system metrics (cpu_usage, memory_usage, queue_size), one row a minute each.

Every value is a function of the row number (hashes, no random()), so two runs give the same
rows relative to the moment they ran, and the big tables can be loaded in parallel slices.
Indexes and constraints are dropped during the load and rebuilt after it (exactly those of
admin_service/db/fixture.sql), then the jobs table is vacuumed (production tables are kept
all-visible by autovacuum) and every table analysed.

Safety: a database whose archive tables hold rows this module did not write is refused; a
benchmark dataset with other parameters is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection as PgConnection

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from admin_service.db.fixtures import DEMO_PEOPLE, FIXTURE_SQL  # noqa: E402

MARKER_SCHEMA = "admin_service_bench"
TABLES = ("archive.analysis_jobs", "archive.analysis_results", "archive.system_metrics", "auth.users")

# u in [0,1) from a row number and a salt: hashint8extended is PostgreSQL's stable 64-bit hash
# (the one hash partitioning relies on), so the values are the same on every server version.
U = "((hashint8extended({g}::bigint, {salt}) & 2147483647)::float8 / 2147483648.0)"


def u(g: str, salt: int) -> str:
    return U.format(g=g, salt=salt)


# One row per job number g: everything both the jobs and the results insert need.
BASE = f"""
WITH params AS (
    SELECT %(jobs)s::bigint AS n, %(users)s::bigint AS users, %(days)s::float8 AS days,
           %(now)s::timestamptz AS now,
           floor(%(jobs)s * 0.97)::bigint AS finished, floor(%(jobs)s * 0.98)::bigint AS running_end
), numbered AS (
    SELECT g, p.*,
           {u("g", 1)} AS r_status, {u("g", 2)} AS r_user, {u("g", 3)} AS r_name, {u("g", 4)} AS r_prio,
           {u("g", 5)} AS r_wait, {u("g", 6)} AS r_run
    FROM params p, generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
), shaped AS (
    SELECT g, n, users, now, r_user, r_name, r_prio, r_wait, r_run, r_status,
           CASE WHEN g > running_end THEN 'queued'
                WHEN g > finished THEN 'processing'
                WHEN r_status < 90.0 / 97 THEN 'completed'
                WHEN r_status < 96.0 / 97 THEN 'failed'
                ELSE 'cancelled' END AS status,
           CASE WHEN g > finished
                -- the last hour's backlog, oldest first: processing, then queued
                THEN now - make_interval(secs => 3600.0 * (1 - (g - finished - 0.5) / (n - finished)))
                -- inverse CDF of a density rising linearly from 1 (oldest) to 3 (newest):
                -- age = days/2 * (3 - sqrt(9 - 8v)), v = share of finished jobs newer than g
                ELSE now - interval '1 hour'
                     - make_interval(secs => 86400.0 * days / 2 * (3 - sqrt(9 - 8 * (1 - (g - 0.5) / finished)))) END
               AS created
    FROM numbered
), base AS (
    SELECT g, status, created, now,
           md5('user-' || (1 + floor(r_user * users)::bigint))::uuid AS user_id,
           CASE WHEN r_name < 0.5 THEN 'AI-Driven Talent Mapping'
                WHEN r_name < 0.85 THEN 'AI-Based IQ Test'
                ELSE 'Custom Assessment' END AS assessment_name,
           floor(r_prio * 10)::int AS priority,
           CASE WHEN status = 'processing' THEN least(now, created + make_interval(secs => 5 + r_wait * 1200))
                WHEN status = 'queued' THEN NULL
                ELSE created + make_interval(secs => 5 + r_wait * 55) END AS started,
           make_interval(secs => 20 + r_run * 280) AS run
    FROM shaped
)
"""

INSERT_JOBS = (
    BASE
    + """
INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, result_id, error_message, completed_at,
    created_at, updated_at, assessment_name, priority, retry_count, max_retries, processing_started_at)
SELECT md5('job-' || g)::uuid,
       md5('job-id-' || g)::uuid::text,
       user_id,
       status,
       CASE WHEN status = 'completed' THEN md5('result-' || g)::uuid END,
       -- Six causes, most with values that differ per job (ids, sizes, times) as real errors
       -- have: failure triage (GET /admin/jobs/failures) must group them by signature.
       CASE WHEN status = 'failed' THEN
           CASE WHEN g %% 10 < 4 THEN 'Model timeout after ' || (295000 + (g * 7919) %% 10000) || ' ms on job '
                                      || md5('job-id-' || g)::uuid
                WHEN g %% 10 < 6 THEN 'Invalid assessment payload: field ''q' || (1 + g %% 60) || ''' is missing'
                WHEN g %% 10 = 6 THEN 'Upstream scoring service unavailable: HTTP 503 from https://scoring.internal/v2/score/' || g
                WHEN g %% 10 = 7 THEN 'Worker ' || substr(md5('worker-' || g), 1, 12) || ' lost its lease at '
                                      || to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                WHEN g %% 10 = 8 THEN 'Result too large: ' || (1048577 + (g * 31) %% 900000) || ' bytes > 1048576'
                ELSE 'Model timeout after 300s' END END,
       CASE WHEN status = 'completed' THEN started + run END,
       created,
       CASE WHEN status IN ('completed', 'failed') THEN started + run
            WHEN status = 'cancelled' THEN created + interval '30 seconds'
            ELSE coalesce(started, created) END,
       assessment_name,
       priority,
       CASE WHEN status = 'failed' THEN 1 + g %% 3 ELSE 0 END,
       3,
       started
FROM base
"""
)

# About 2 KB of JSON per result: the shape of a personality/IQ report with 60 timed answers.
# The answer arrays come from a pool of 97 (built once per statement), the rest varies per row.
INSERT_RESULTS = (
    BASE
    + """
, pool AS MATERIALIZED (
    SELECT k, jsonb_build_object('answers', jsonb_agg(jsonb_build_array(q, 1 + (k + q * 7) %% 5, 800 + (k * q * 37) %% 9000)
                                         ORDER BY q)) AS doc
    FROM generate_series(0, 96) AS k, generate_series(1, 60) AS q
    GROUP BY k
)
INSERT INTO archive.analysis_results (id, user_id, test_data, test_result, raw_responses, is_public, created_at, updated_at)
SELECT md5('result-' || g)::uuid, user_id,
       jsonb_build_object('assessment', assessment_name, 'questions', 60, 'language', 'en', 'version', '2.3',
                          'client', jsonb_build_object('platform', 'web', 'duration_s', 300 + g %% 900)),
       jsonb_build_object(
           'archetype', (ARRAY['The Analyst', 'The Builder', 'The Connector', 'The Explorer'])[1 + g %% 4],
           'scores', jsonb_build_object('openness', g %% 101, 'conscientiousness', (g * 7) %% 101,
                                        'extraversion', (g * 13) %% 101, 'agreeableness', (g * 17) %% 101,
                                        'neuroticism', (g * 19) %% 101, 'iq', 85 + (g * 23) %% 60),
           'strengths', jsonb_build_array('Structured problem solving', 'Pattern recognition under time pressure',
                                          'Clear written communication'),
           'recommendations', jsonb_build_array(
               'Pair analytical tasks with short review cycles to keep momentum on long projects.',
               'Prefer roles where hypotheses can be tested quickly against real data.',
               'Schedule collaborative sessions early in the week when focus is highest.'),
           'traits', jsonb_build_array(
               jsonb_build_object('name', 'curiosity', 'percentile', g %% 100, 'band', (ARRAY['low', 'mid', 'high'])[1 + g %% 3]),
               jsonb_build_object('name', 'persistence', 'percentile', (g * 3) %% 100, 'band', (ARRAY['low', 'mid', 'high'])[1 + (g * 3) %% 3]),
               jsonb_build_object('name', 'collaboration', 'percentile', (g * 5) %% 100, 'band', (ARRAY['low', 'mid', 'high'])[1 + (g * 5) %% 3]),
               jsonb_build_object('name', 'verbal_reasoning', 'percentile', (g * 11) %% 100, 'band', (ARRAY['low', 'mid', 'high'])[1 + (g * 11) %% 3])),
           'summary', 'Generated by the admin-service benchmark: a stable, production-sized result document '
                      || 'with scores, strengths and recommendations for job ' || g),
       pool.doc,
       false, started + run, started + run
FROM base JOIN pool ON pool.k = base.g %% 97
WHERE status = 'completed'
"""
)

INSERT_USERS = """
INSERT INTO auth.users (id, username, email, password_hash, user_type, is_active, token_balance, last_login, created_at, updated_at)
SELECT md5('user-' || k)::uuid, 'user' || k, 'user' || k || '@example.com', 'bench-not-a-hash', 'user', k %% 50 <> 0, k %% 100,
       %(now)s::timestamptz - make_interval(hours => (k %% 500)::int),
       %(now)s::timestamptz - make_interval(days => 200 - (k %% 200)::int),
       %(now)s::timestamptz - make_interval(days => (k %% 30)::int)
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS k
"""

INSERT_METRICS = """
INSERT INTO archive.system_metrics (id, metric_name, metric_value, metric_data, recorded_at)
SELECT md5(m.name || '-' || g)::uuid, m.name,
       round((m.base + 15 * sin(g / 90.0) + 5 * ((hashint8extended(g, m.salt) & 1023) / 1023.0))::numeric, 2),
       jsonb_build_object('unit', m.unit, 'host', 'worker-' || (1 + g %% 3)),
       (%(now)s::timestamptz AT TIME ZONE 'UTC') - make_interval(mins => g::int)
FROM generate_series(0, 7 * 1440 - 1) AS g,
     (VALUES ('cpu_usage', 45.0, 'percent', 11), ('memory_usage', 60.0, 'percent', 12),
             ('queue_size', 20.0, 'jobs', 13)) AS m(name, base, unit, salt)
"""

LOAD_SETTINGS = (
    "SET synchronous_commit = off; SET statement_timeout = 0; SET maintenance_work_mem = '512MB'; "
    "SET max_parallel_maintenance_workers = 1; SET work_mem = '64MB'; SET jit = off"
)


def connect(url: str) -> PgConnection:
    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(LOAD_SETTINGS)
        try:
            # pglz costs three times the rest of the load; lz4 is what a new deployment picks.
            cur.execute("SET default_toast_compression = lz4")
        except psycopg2.Error:
            pass  # a server built without lz4: pglz it is
    return conn


def existing_dataset(cur: Any) -> dict[str, Any] | None | bool:
    """The parameters of the bench dataset in this database; None when there is no data;
    False when the archive tables hold rows that are not ours."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{MARKER_SCHEMA}.dataset",))
    if cur.fetchone()[0]:
        cur.execute(f"SELECT params FROM {MARKER_SCHEMA}.dataset")
        row = cur.fetchone()
        if row:
            return row[0]
    for table in TABLES:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if cur.fetchone()[0]:
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
            if cur.fetchone()[0]:
                return False
    return None


def _definitions(cur: Any) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Constraints (table, name, definition) and plain indexes of the fixture tables."""
    cur.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname IN ('archive', 'auth') AND c.contype IN ('p', 'u')
        """
    )
    constraints = cur.fetchall()
    cur.execute(
        """
        SELECT i.indexdef FROM pg_indexes i
        WHERE i.schemaname IN ('archive', 'auth')
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """
    )
    return constraints, [row[0] for row in cur.fetchall()]


def _slices(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, (hi - lo + 1 + parts - 1) // parts)
    return [(a, min(hi, a + step - 1)) for a in range(lo, hi + 1, step)]


def generate(
    url: str, jobs: int, users: int, *, days: float = 180.0, force: bool = False, parallel: int = 2, log: Any = print
) -> dict[str, Any]:
    """Create (or keep, when identical) the dataset; return what it holds and how long it took."""
    started = time.perf_counter()
    conn = connect(url)
    cur = conn.cursor()
    params = {"jobs": jobs, "users": users, "days": days, "version": 3}
    found = existing_dataset(cur)
    if found is False:
        raise SystemExit("refusing: the archive tables of this database hold rows the benchmark did not write")
    if found and {k: found.get(k) for k in params} == params and not force:
        log(f"dataset: kept the existing one ({jobs:,} jobs, generated {found.get('generated_at')})")
        return {**found, "kept": True}

    cur.execute("SELECT now()")
    now = cur.fetchone()[0]
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"  {name}: {timings[name]:.1f} s")

    t0 = time.perf_counter()
    cur.execute(f"DROP SCHEMA IF EXISTS archive, auth, {MARKER_SCHEMA} CASCADE")
    cur.execute(FIXTURE_SQL)
    constraints, indexes = _definitions(cur)
    for table, name, _ in constraints:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname IN ('archive', 'auth')")
    for (name,) in cur.fetchall():
        cur.execute(f'DROP INDEX IF EXISTS archive."{name}", auth."{name}"')
    step("schema", t0)

    t0 = time.perf_counter()
    base = {"jobs": jobs, "users": users, "days": days, "now": now}
    # Work items of similar size; `parallel` connections take them in order.
    work: list[tuple[str, str, dict[str, Any]]] = []
    result_parts = max(1, jobs // 150_000)
    for lo, hi in _slices(1, jobs, result_parts):
        work.append(("results", INSERT_RESULTS, {**base, "lo": lo, "hi": hi}))
    for lo, hi in _slices(1, jobs, max(1, jobs // 500_000)):
        work.append(("jobs", INSERT_JOBS, {**base, "lo": lo, "hi": hi}))
    work.append(("users", INSERT_USERS, {"now": now, "lo": 1, "hi": users}))
    work.append(("metrics", INSERT_METRICS, {"now": now}))

    def run(item: tuple[str, str, dict[str, Any]]) -> None:
        c = connect(url)
        t = time.perf_counter()
        try:
            with c.cursor() as k:
                k.execute(item[1], item[2])
        finally:
            c.close()
        log(f"    {item[0]} {item[2].get('lo', '')}-{item[2].get('hi', '')}: {time.perf_counter() - t:.1f} s")

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, work))
    for user_id, username, email, user_type, active in DEMO_PEOPLE:
        cur.execute(
            "INSERT INTO auth.users (id, username, email, user_type, is_active) VALUES (%s, %s, %s, %s, %s)",
            (user_id, username, email, user_type, active),
        )
    step("rows", t0)

    t0 = time.perf_counter()
    ddl = [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for table, name, definition in constraints] + indexes
    # Biggest first, so the two connections finish together.
    ddl.sort(key=lambda s: ("analysis_results" not in s, "analysis_jobs" not in s))

    def build(statement: str) -> None:
        c = connect(url)
        try:
            with c.cursor() as k:
                k.execute(statement)
        finally:
            c.close()

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(build, ddl))
    step("indexes", t0)

    t0 = time.perf_counter()
    # Production tables are kept all-visible by autovacuum: index-only scans depend on it.
    cur.execute("VACUUM (ANALYZE) archive.analysis_jobs")
    cur.execute("VACUUM (ANALYZE) auth.users")
    cur.execute("ANALYZE archive.analysis_results")
    cur.execute("ANALYZE archive.system_metrics")
    step("vacuum+analyze", t0)

    cur.execute("SELECT status, count(*) FROM archive.analysis_jobs GROUP BY 1 ORDER BY 1")
    mix = {status: n for status, n in cur.fetchall()}
    cur.execute(
        "SELECT count(*), avg(length(test_data::text) + length(test_result::text) + length(raw_responses::text)) "
        "FROM archive.analysis_results TABLESAMPLE SYSTEM (1) REPEATABLE (42)"
    )
    _, result_bytes = cur.fetchone()
    cur.execute("SELECT count(*) FROM archive.analysis_jobs WHERE result_id IS NOT NULL")
    results = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM auth.users")
    user_rows = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM archive.system_metrics")
    metric_rows = cur.fetchone()[0]
    cur.execute(
        "SELECT min(created_at), max(created_at), "
        "count(*) FILTER (WHERE created_at >= now() - interval '1 day'), "
        "count(*) FILTER (WHERE created_at >= now() - interval '7 days') FROM archive.analysis_jobs"
    )
    oldest, newest, last_day, last_week = cur.fetchone()
    cur.execute("SELECT pg_total_relation_size('archive.analysis_jobs'), pg_total_relation_size('archive.analysis_results')")
    jobs_bytes, results_bytes = cur.fetchone()
    info = {
        **params,
        "generated_at": now.isoformat(),
        "seconds": round(time.perf_counter() - started, 1),
        "timings": timings,
        "status_mix": mix,
        "results": results,
        "result_json_bytes_avg": round(float(result_bytes or 0)),
        "users_rows": user_rows,
        "metric_rows": metric_rows,
        "created_min": oldest.isoformat() if oldest else None,
        "created_max": newest.isoformat() if newest else None,
        "jobs_last_24h": last_day,
        "jobs_last_7d": last_week,
        "jobs_table_mb": round(jobs_bytes / 2**20),
        "results_table_mb": round(results_bytes / 2**20),
        "kept": False,
    }
    cur.execute(f"CREATE SCHEMA {MARKER_SCHEMA}")
    cur.execute(f"CREATE TABLE {MARKER_SCHEMA}.dataset (params jsonb NOT NULL)")
    cur.execute(f"INSERT INTO {MARKER_SCHEMA}.dataset VALUES (%s)", (json.dumps(info),))
    conn.close()
    log(
        f"dataset: {jobs:,} jobs, {results:,} results (~{info['result_json_bytes_avg']} B JSON each), "
        f"{user_rows:,} users, {metric_rows:,} metric rows in {info['seconds']} s"
    )
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=180.0)
    parser.add_argument("--force", action="store_true", help="regenerate even when the same dataset is there")
    args = parser.parse_args()
    info = generate(args.url, args.jobs, args.users, days=args.days, force=args.force)
    print(json.dumps(info, indent=2, default=str))


if __name__ == "__main__":
    main()
