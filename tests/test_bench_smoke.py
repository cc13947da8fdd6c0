"""The benchmark harness (make bench) on a tiny dataset, so that it cannot rot: dataset
generation, the service under gunicorn, wrk, the database floor, db install-indexes, SSE
streams and both latency modes, and the report files. Seconds, not minutes."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.support.harness import run_harness
from tests.support.postgres import scratch_database


@pytest.mark.timeout(300)
def test_bench_harness_smoke(server_url: str, tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is missing: `make test-tools` installs it (Debian's wrk)"
    out = tmp_path / "report"
    with scratch_database(server_url, f"admin_service_bench_smoke_{uuid.uuid4().hex[:8]}") as url:
        proc = run_harness(
            "bench.run",
            "--database-url",
            url,
            "--jobs",
            "3000",
            "--users",
            "300",
            "--seconds",
            "1",
            "--concurrency",
            "4",
            "--explain-runs",
            "1",
            "--sse",
            "20",
            "--sockets",
            "",
            "--updates",
            "2",
            "--smoke",
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    mix = results["dataset"]["status_mix"]
    assert sum(mix.values()) == 3000 and set(mix) == {"queued", "processing", "completed", "failed", "cancelled"}
    assert mix["completed"] == results["dataset"]["results"]
    phases = {phase["label"]: phase for phase in results["rest"]}
    assert set(phases) == {"without indexes", "with install-indexes"}
    for phase in phases.values():
        cases = {case["case"]: case for case in phase["cases"]}
        assert set(cases) == {"stats cold", "list assessment_name=IQ", "details"}
        for case in cases.values():
            for mode in ("sequential", "concurrent"):
                assert case[mode]["requests"] > 0 and case[mode]["errors"] == 0, (case["case"], mode, case[mode])
                assert 0 < case[mode]["p50_ms"] <= case[mode]["p99_ms"]
        assert cases["details"]["db_statements"] >= 1 and cases["details"]["db_ms"] > 0
    assert "CREATE INDEX CONCURRENTLY" in results["indexes"]["output"]
    [sse] = results["live"]["sse"]
    assert sse["connected"] == 20 and sse["worker_rss_mib"] > 0
    # Every capture mode by default; exact only where its install command exists, else said so.
    modes = results["live"]["modes"]
    assert modes[:2] == ["polling", "notify_trigger"]
    assert modes[2:] == ["exact"] or "capture mode exact skipped" in proc.stdout
    for mode in modes:
        assert sse[mode]["every_receiver_every_event"], sse[mode]
    report = (out / "RESULTS.md").read_text()
    assert "| details: p95 ≤ 5 ms |" in report and "## Live" in report
    assert "| polling p50 / p99 / max ms | received | NOTIFY trigger p50 / p99 / max ms |" in report
    # The chart needs matplotlib, which only `make bench` installs (bench/requirements.txt).
    if _has_matplotlib():
        assert (out / "latency.png").stat().st_size > 1000
    else:
        assert not (out / "latency.png").exists()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
