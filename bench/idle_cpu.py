"""What the service costs PostgreSQL while idle: one instance under gunicorn (production
defaults, nobody connected) against a benchmark database, and the CPU time that database's
backends used over a window.

    .venv/bin/python -m bench.dataset --url postgresql://postgres@127.0.0.1:5432/bench12p --jobs 1000000
    .venv/bin/python -m bench.idle_cpu --url postgresql://postgres@127.0.0.1:5432/bench12p --seconds 60

Two figures, from utime + stime in /proc/<pid>/stat read before and after the window:
- the server: every process of the PostgreSQL server (the postmaster, its live children, and
  through the postmaster's cutime + cstime every child that ended inside the window, such as
  the parallel workers of a parallel sequential scan). Exact for a server of its own; on a
  shared server it counts the other databases' work too.
- the database's backends: the backends connected to that database that live through the
  window (the service's own connections; this script's is idle in between). Parallel workers
  end within milliseconds and are not in it, so a parallel scan is undercounted here.
The server must be on this machine (its processes readable in /proc).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.service import cpu_seconds, run_service  # noqa: E402


def backend_cpu(conn: psycopg2.extensions.connection, database: str) -> dict[int, float]:
    """CPU seconds so far of each backend connected to `database` (this connection's own excluded)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
        pids = [row[0] for row in cur.fetchall()]
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:
            continue  # ended meanwhile
    return found


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def server_cpu(postmaster: int) -> float:
    """CPU seconds so far of the whole server: the postmaster, its live children, its reaped ones."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    for pid in children_of(postmaster):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue  # reaped meanwhile: now in cutime (counted at the next read)
    return total


def postmaster_pid(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SHOW data_directory")
        directory = cur.fetchone()[0]
    return int(Path(directory, "postmaster.pid").read_text().split("\n", 1)[0])


def measure(url: str, seconds: float, warm_up: float, env: dict[str, str]) -> dict[str, float | int]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    database = conn.get_dsn_parameters()["dbname"]
    postmaster = postmaster_pid(conn)
    with tempfile.TemporaryDirectory(prefix="admin-service-idle-") as workdir, run_service(url, Path(workdir), env) as service:
        time.sleep(warm_up)  # leadership taken, first passes done, pools opened
        before, server_before = backend_cpu(conn, database), server_cpu(postmaster)
        time.sleep(seconds)
        after, server_after = backend_cpu(conn, database), server_cpu(postmaster)
        workers = len(service.workers())
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    gone = [pid for pid in before if pid not in after]
    conn.close()
    return {
        "seconds": seconds,
        "workers": workers,
        "backends": len(after),
        "backends_gone": len(gone),
        "backends_cpu_seconds_per_minute": round(used * 60 / seconds, 2),
        "server_cpu_seconds_per_minute": round((server_after - server_before) * 60 / seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the benchmark database (bench.dataset)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warm-up", type=float, default=10)
    parser.add_argument("--env", nargs="*", default=[], help="extra settings for the service, NAME=VALUE")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    result = measure(args.url, args.seconds, args.warm_up, env)
    print(
        f"idle {result['seconds']:g} s, {result['workers']} worker(s), {result['backends']} backend(s) "
        f"({result['backends_gone']} ended): PostgreSQL CPU-s per minute: whole server "
        f"{result['server_cpu_seconds_per_minute']}, the database's backends {result['backends_cpu_seconds_per_minute']}"
    )


if __name__ == "__main__":
    main()
