#!/bin/bash
# The cost of change capture to the owner's writers (README "Cost to the writers"): pgbench
# single-row UPDATE transactions on archive.analysis_jobs, with nothing of ours and with
# `db install-change-capture`, in pairs of alternating order (so a machine's drifting load falls
# on both alike). With WITH_LEADER=1 a capture leader (one gunicorn worker, CAPTURE_MODE=exact)
# consumes the changes meanwhile.
#
#   .venv/bin/python -m bench.dataset --url postgresql://postgres@127.0.0.1:5432/bench12 --jobs 1000000
#   bench/writer_overhead.sh postgresql://postgres@127.0.0.1:5432/bench12 [pairs] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
U=${1:?database URL}
PAIRS=${2:-8}
SECONDS_PER_RUN=${3:-10}
export DATABASE_URL=$U JWT_SECRET=${JWT_SECRET:-writer-overhead-bench-secret-0123456789abcdef}
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
SCRIPT=$(mktemp --suffix=.sql)
trap 'rm -f "$SCRIPT"; [ -n "${SVC:-}" ] && kill "$SVC"' EXIT
cat > "$SCRIPT" <<'SQL'
\set n random(1, :jobs)
UPDATE archive.analysis_jobs SET status = CASE WHEN status = 'processing' THEN 'completed' ELSE 'processing' END,
       updated_at = now()
WHERE id = (SELECT id FROM public.bench_job_ids WHERE n = :n);
SQL
cli() { .venv/bin/python -m admin_service db "$@" >/dev/null; }
psql -q "$U" -c "CREATE TABLE IF NOT EXISTS public.bench_job_ids AS SELECT row_number() OVER ()::int AS n, id FROM archive.analysis_jobs" \
  -c "CREATE UNIQUE INDEX IF NOT EXISTS bench_job_ids_n ON public.bench_job_ids (n)"
JOBS=$(psql -tA "$U" -c "SELECT count(*) FROM public.bench_job_ids")
cli upgrade
if [ "${WITH_LEADER:-0}" = 1 ]; then
  CAPTURE_MODE=exact WEB_CONCURRENCY=1 PORT=${PORT:-3917} HOST=127.0.0.1 .venv/bin/python -m gunicorn -c gunicorn.conf.py wsgi:app \
    > /tmp/writer-overhead-service.log 2>&1 &
  SVC=$!
  sleep 8
fi
set_mode() {
  cli install-change-capture --drop
  cli install-notify-trigger --drop
  if [ "$1" = exact ]; then cli install-change-capture; fi
  psql -q "$U" -c "TRUNCATE admin.job_changes"
}
for pair in $(seq 1 "$PAIRS"); do
  if [ $((pair % 2)) = 1 ]; then order="none exact"; else order="exact none"; fi
  for mode in $order; do
    set_mode "$mode"
    tps=$("$PGBENCH" -n -c 4 -j 2 -T "$SECONDS_PER_RUN" -D jobs="$JOBS" -f "$SCRIPT" "$U" 2>&1 | grep -E "^tps" | grep -oE "[0-9]+\.[0-9]+" | head -1)
    echo "pair=$pair mode=$mode tps=$tps load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
set_mode none
