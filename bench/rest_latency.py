"""Sequential latency of each REST endpoint against a running service.

    python bench/rest_latency.py --url http://127.0.0.1:3007 --token T [--n 200]

Prints p50/p95/p99 per case (client-side wall time over keep-alive HTTP, one client).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import requests


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    base = args.url.rstrip("/")
    first = session.get(f"{base}/admin/jobs", params={"limit": 50, "status": "completed"}).json()["data"]["jobs"]
    job = first[0]["id"]
    cursor = session.get(f"{base}/admin/jobs", params={"limit": 50}).json()["data"]["pagination"]["nextCursor"]
    cases = {
        "stats (shared)": ("/admin/jobs/stats", {}),
        "stats (fresh)": ("/admin/jobs/stats", {"fresh": "true"}),
        "list page 1": ("/admin/jobs", {"limit": 50}),
        "list status=failed": ("/admin/jobs", {"limit": 50, "status": "failed"}),
        "list assessment_name=IQ": ("/admin/jobs", {"limit": 50, "assessment_name": "IQ"}),
        "list sort priority": ("/admin/jobs", {"limit": 50, "sort_by": "priority"}),
        "list sort completed_at": ("/admin/jobs", {"limit": 50, "sort_by": "completed_at"}),
        "list count=none": ("/admin/jobs", {"limit": 50, "count": "none"}),
        "list cursor page 2": ("/admin/jobs", {"limit": 50, "cursor": cursor}),
        "list page 200 (offset)": ("/admin/jobs", {"limit": 50, "page": 200}),
        "details": (f"/admin/jobs/{job}", {}),
        "results": (f"/admin/jobs/{job}/results", {}),
    }
    report = {}
    for name, (path, params) in cases.items():
        times = []
        for _ in range(args.n):
            started = time.perf_counter()
            resp = session.get(base + path, params=params)
            times.append((time.perf_counter() - started) * 1000)
            assert resp.status_code == 200, (name, resp.status_code, resp.text[:200])
        report[name] = {
            "p50": round(percentile(times, 0.5), 2),
            "p95": round(percentile(times, 0.95), 2),
            "p99": round(percentile(times, 0.99), 2),
            "mean": round(statistics.fmean(times), 2),
        }
        print(f"{name:28s} p50 {report[name]['p50']:7.2f} ms  p95 {report[name]['p95']:7.2f} ms  p99 {report[name]['p99']:7.2f} ms")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
