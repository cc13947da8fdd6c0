"""bench/RESULTS.md and bench/latency.png from the results of bench/run.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**missed**")


def _case(phase: dict[str, Any], name_start: str) -> dict[str, Any] | None:
    return next((c for c in phase["cases"] if c["case"].startswith(name_start)), None)


def budgets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(budget, measured, phase, met) for every budget of the issue; latency budgets are
    judged on the sequential run (one client), throughput on the concurrent one."""
    rows: list[tuple[str, str, str, bool | None]] = []
    for phase in results.get("rest", []):
        label = phase["label"]
        for case in phase["cases"]:
            if case["budget_p95_ms"] is None:
                continue
            p95 = case["sequential"]["p95_ms"]
            rows.append(
                (
                    f"{case['case']}: p95 ≤ {case['budget_p95_ms']:g} ms",
                    f"{p95:.2f} ms",
                    label,
                    p95 <= case["budget_p95_ms"] and case["sequential"]["errors"] == 0,
                )
            )
        details = _case(phase, "details")
        if details:
            rps = details["concurrent"]["rps"]
            rows.append(
                (
                    f"details ≥ 1,000 req/s ({phase['workers']} workers, c{phase['concurrency']})",
                    f"{rps:,.0f} req/s",
                    label,
                    rps >= 1000 and details["concurrent"]["errors"] == 0,
                )
            )
    live = results.get("live", {})
    for run in live.get("sse", []):
        if run["clients"] >= 10_000:
            rows.append(
                (
                    "10,000 SSE streams on one worker: RSS ≤ 500 MB",
                    f"{run['worker_rss_mib']:.0f} MiB",
                    "live",
                    run["connected"] >= 10_000 and run["worker_rss_mib"] * 1.048576 <= 500,
                )
            )
            measured = [m for m in live_modes(live) if m in run]
            if measured:
                rows.append(
                    (
                        "10,000 SSE streams: every stream receives every event",
                        ", ".join(f"{run[m]['received']:,}/{run[m]['expected']:,} {MODE_LABELS.get(m, m)}" for m in measured),
                        "live",
                        all(run[m]["every_receiver_every_event"] for m in measured),
                    )
                )
    for kind in ("sse", "socketio"):
        for run in live.get(kind, []):
            name = f"{'SSE' if kind == 'sse' else 'Socket.IO'} x{run['clients']:,}"
            for mode in live_modes(live):
                if mode not in run:
                    continue
                measured_run, budget = run[mode], LATENCY_BUDGETS_MS.get(mode, 1000)
                rows.append(
                    (
                        f"{name}: update latency p99 ≤ {_budget(budget)} ({MODE_LABELS.get(mode, mode)})",
                        f"{_f(measured_run['p99_ms'])} ms",
                        "live",
                        measured_run["p99_ms"] is not None
                        and measured_run["p99_ms"] <= budget
                        and measured_run["every_receiver_every_event"],
                    )
                )
    return rows


# The capture modes of the live cases (bench/live.py's CAPTURE_MODES keys), in the order measured.
MODE_LABELS = {"polling": "polling", "notify_trigger": "NOTIFY trigger", "exact": "exact"}
# p99 budgets: polling samples every CAPTURE_POLL_MS; the triggers wake capture at once.
LATENCY_BUDGETS_MS = {"polling": 1000, "notify_trigger": 250, "exact": 250}
MODE_COLORS = {"polling": "#c0504d", "notify_trigger": "#4f81bd", "exact": "#9bbb59"}


def live_modes(live: dict[str, Any]) -> list[str]:
    """The modes measured (results before --capture-modes: polling and the trigger)."""
    return list(live.get("modes") or ("polling", "notify_trigger"))


def size_suffix(jobs: int) -> str:
    """The file-name suffix of a run's reports: none up to the default 1,000,000 jobs (a smaller run
    is a quick look, replacing the default's files as it always did), -10M for a larger one, kept
    beside the default's so that the reports can show the growth between the two."""
    if jobs <= 1_000_000:
        return ""
    if jobs % 1_000_000 == 0:
        return f"-{jobs // 1_000_000}M"
    if jobs % 1_000 == 0:
        return f"-{jobs // 1_000}k"
    return f"-{jobs}"


def other_sizes(results: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """The results of runs on other dataset sizes kept in `folder` (results.json, results-10M.json …)."""
    import json

    found = []
    for path in sorted(folder.glob("results*.json")):
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(other, dict) and other.get("dataset", {}).get("jobs") not in (None, results["dataset"]["jobs"]):
            if other.get("rest"):
                found.append(other)
    return sorted(found, key=lambda r: r["dataset"]["jobs"])


def growth_lines(results: dict[str, Any], folder: Path) -> list[str]:
    """Each REST case's sequential p95 at every dataset size found, and its growth against the
    smallest: how a case's cost grows with the table (1 = not at all)."""
    runs = sorted([results, *other_sizes(results, folder)], key=lambda r: r["dataset"]["jobs"])
    if len(runs) < 2:
        return []
    sizes = [f"{r['dataset']['jobs']:,}" for r in runs]
    lines = [
        "",
        "## Growth with the table",
        "",
        "Sequential p95 (ms) of each case at every dataset size measured (each its own `make bench` run: "
        + ", ".join(f"{s} jobs on {r['date'][:10]}" for s, r in zip(sizes, runs, strict=True))
        + "), and the growth factor from the smallest to the largest (1.0× = the table's size costs nothing). "
        "Budget verdicts are the largest run's.",
        "",
    ]
    for label in dict.fromkeys(p["label"] for r in runs for p in r["rest"]):
        phases = [next((p for p in r["rest"] if p["label"] == label), None) for r in runs]
        lines += [
            f"### {label}",
            "",
            "| case | " + " | ".join(f"p95 at {s}" for s in sizes) + " | growth | budget | verdict |",
            "|---|" + "---|" * len(sizes) + "---|---|---|",
        ]
        names = dict.fromkeys(c["case"] for p in phases if p for c in p["cases"])
        for name in names:
            cells, first, last, budget, errors, measured = [], None, None, None, 0, 0
            for p in phases:
                c = next((c for c in p["cases"] if c["case"] == name), None) if p else None
                p95 = c["sequential"]["p95_ms"] if c else None
                cells.append(_f(p95, 2))
                if c:
                    measured += 1
                    first = p95 if first is None else first
                    last, budget = p95, c["budget_p95_ms"]
                    errors = c["sequential"]["errors"]
            growth = f"{last / first:.1f}×" if measured > 1 and first and last else "—"
            ok = None if budget is None or last is None else (last <= budget and errors == 0)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth} | {_budget_cell(budget)} | {_verdict(ok)} |")
        lines.append("")
    return lines


def _budget_cell(budget: float | None) -> str:
    return f"≤ {budget:g} ms" if budget is not None else "—"


def _budget(ms: int) -> str:
    return f"{ms // 1000} s" if ms >= 1000 else f"{ms} ms"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m, d = results["machine"], results["dataset"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {results['date']} by `make bench` (`{results.get('command', '')}`), {results.get('total_seconds', 0):,.0f} s in all.",
        "Every figure below comes from that run but for the cases re-measured since (listed here, marked ↻ in the",
        "tables); `bench/results.json` has them all (and the plans).",
        "",
        *[
            f"- ↻ re-measured {again['date']} (`{again['command']}`, load average at start "
            f"{', '.join(f'{x:.2f}' for x in again['loadavg_start'])}): " + ", ".join(again["cases"])
            for again in results.get("remeasured", [])
        ],
        *([""] if results.get("remeasured") else []),
        "## Machine and versions",
        "",
        f"- {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}",
        f"- load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}; at end "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', ()))} (other work on the machine shows here)",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- {m['postgresql']} ({results['database']}); " + ", ".join(f"{k}={v}" for k, v in m["postgresql_settings"].items()),
        f"- load generator: {m['load_generator']} (compiled, one thread, its own process on the same 2 cores); "
        "live clients: Node (SSE: `bench/sse_clients.js` on Node's HTTP parser; Socket.IO: socket.io-client v4), "
        "in a process of their own",
        "",
        "## Dataset",
        "",
        f"- {d['jobs']:,} jobs, {d['users_rows']:,} users, {d['results']:,} results "
        f"(~{d['result_json_bytes_avg']:,} B of JSON each), {d['metric_rows']:,} system-metric rows (7 days, one a minute)",
        "- status mix: " + ", ".join(f"{k} {v:,}" for k, v in d["status_mix"].items()),
        f"- created {d['created_min'][:10]} … {d['created_max'][:16]}, denser recently: {d['jobs_last_24h']:,} in the "
        f"last 24 h, {d['jobs_last_7d']:,} in the last 7 days",
        f"- tables: jobs {d['jobs_table_mb']:,} MB, results {d['results_table_mb']:,} MB (with indexes)"
        + (
            f"; the whole database {results['disk']['database_mb_after_dataset']:,} MiB on disk after generation, "
            f"{results['disk'].get('database_mb_at_end', 0):,} MiB at the end (with install-indexes and the service's own tables)"
            if results.get("disk")
            else ""
        ),
        f"- generated in **{d['seconds']} s** ("
        + ", ".join(f"{k} {v} s" for k, v in d["timings"].items())
        + ")"
        + (" — kept from an earlier run" if d.get("kept") else ""),
        "",
        "## Budgets",
        "",
        "Latency budgets are judged on the sequential run (one connection: the latency a request has",
        "on its own); throughput on the concurrent run.",
        "",
        "| budget | measured | phase | verdict |",
        "|---|---|---|---|",
    ]
    for budget, measured, phase, ok in budgets(results):
        lines.append(f"| {budget} | {measured} | {phase} | {_verdict(ok)} |")
    for phase in results.get("rest", []):
        lines += [
            "",
            f"## REST, {phase['label']}",
            "",
            f"gunicorn + gevent, {phase['workers']} workers (the default), wrk -t1 for {phase['seconds']:g} s per run: "
            f"sequential = 1 connection, concurrent = {phase['concurrency']} connections. DB = the server's own planning + "
            "execution time of the statements the request runs (EXPLAIN ANALYZE, median; for stats cold the sum of "
            "statements that the service runs on 3 connections at once); ratio = sequential p50 / DB; load = 1-minute "
            "load average after the case (2 cores: above ~3, the case shared the machine with other work). "
            "Latencies in ms.",
            "",
            "| case | seq p50 | seq p95 | seq p99 | seq req/s | conc p50 | conc p95 | conc p99 | conc req/s | DB ms | ratio | errors | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in phase["cases"]:
            s, k = c["sequential"], c["concurrent"]
            lines.append(
                f"| {c['case']}{' ↻' if c.get('remeasured') else ''} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['rps']:,.0f} | "
                f"{k['p50_ms']:.2f} | {k['p95_ms']:.2f} | {k['p99_ms']:.2f} | {k['rps']:,.0f} | "
                f"{_f(c['db_ms'], 2) if c['db_statements'] else '0 (no query)'} | "
                f"{_f(c['overhead_ratio']) + '×' if c['overhead_ratio'] else '—'} | {s['errors'] + k['errors']} | "
                f"{_f(c.get('loadavg_1m'))} |"
            )
        from bench.compare import markdown as compare_markdown

        lines += compare_markdown(phase)
        lines += ["", "<details><summary>plans (one line per statement)</summary>", ""]
        for c in phase["cases"]:
            for plan in c["db_plans"]:
                lines.append(f"- {c['case']}: `{plan}`")
        lines += ["", "</details>"]
    if results.get("indexes"):
        lines += [
            "",
            f"`python -m admin_service db install-indexes` ran in {results['indexes']['seconds']} s and printed:",
            "",
            "```sql",
            results["indexes"]["output"].strip(),
            "```",
        ]
    if results.get("export"):
        from bench.export import markdown as export_markdown

        lines += ["", *export_markdown(results["export"])]
    live = results.get("live", {})
    if live.get("sse") or live.get("socketio"):
        modes = live_modes(live)
        lines += [
            "",
            "## Live",
            "",
            f"One gunicorn gevent worker (WEB_CONCURRENCY=1), started afresh for each row, default capture/tail "
            f"settings (CAPTURE_POLL_MS=500). "
            f"Latency: a job UPDATE committed → its job-update parsed by every client; {live['updates']} updates "
            f"{live['spacing_s']} s apart per capture mode, in this order: "
            f"{', '.join(MODE_LABELS.get(m, m) for m in modes)} (polling: nothing installed; NOTIFY trigger: "
            "`db install-notify-trigger`; exact: `db install-change-capture`); "
            "clients in their own process (Node: `bench/sse_clients.js`, `bench/sio_clients.js` with socket.io-client).",
            "",
            "| transport | clients | connected | connect s | worker RSS MiB (idle → open) | KiB/client | "
            + " | ".join(f"{MODE_LABELS.get(m, m)} p50 / p99 / max ms | received" for m in modes)
            + " | load |",
            "|---|---|---|---|---|---|" + "---|---|" * len(modes) + "---|",
        ]
        for kind in ("sse", "socketio"):
            for r in live.get(kind, []):
                cells = []
                for m in modes:
                    run = r.get(m)
                    cells += (
                        [
                            f"{_f(run['p50_ms'])} / {_f(run['p99_ms'])} / {_f(run['max_ms'])}",
                            f"{run['received']:,}/{run['expected']:,}",
                        ]
                        if run
                        else ["—", "—"]
                    )
                lines.append(
                    f"| {'SSE' if kind == 'sse' else 'Socket.IO (websocket)'}{' ↻' if r.get('remeasured') else ''} | "
                    f"{r['clients']:,} | {r['connected']:,} | "
                    f"{r['connect_seconds']} | {r['worker_rss_idle_mib']:.0f} → {r['worker_rss_mib']:.0f} | "
                    f"{r['rss_per_client_kib']} | " + " | ".join(cells) + f" | {_f(r.get('loadavg_1m'))} |"
                )
    if results.get("stats_cost"):
        from bench.stats_cost import markdown as stats_cost_markdown

        lines += stats_cost_markdown(results["stats_cost"])
    lines += growth_lines(results, path.parent)
    notes = results.get("notes")
    if notes:
        lines += ["", "## Notes", "", *notes]
    # The reading of the figures (causes, changes, what is left) is kept by hand beside the code.
    analysis = Path(__file__).with_name("ANALYSIS.md")
    if analysis.exists():
        lines += ["", analysis.read_text().strip()]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                                                      # fresh embedded PostgreSQL",
        "BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench make bench   # a database of its own",
        "make bench BENCH_ARGS='--jobs 100000 --seconds 4 --sse 1000'    # smaller/faster",
        "make bench JOBS=10000000                                        # 10M: results-10M.json, RESULTS-10M.md",
        "make bench BENCH_ARGS='--compare-rev main~5 --only details'    # another revision, interleaved, with ratios",
        "make bench BENCH_ARGS='--compare-url http://host:3007 --compare-token T'  # another deployment or implementation",
        "```",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -r bench/requirements.txt): no chart")
        return
    phases = results.get("rest", [])
    if not phases:
        return
    names = [c["case"] for c in phases[0]["cases"]]
    live = results.get("live", {})
    live_rows = [
        (f"{'SSE' if kind == 'sse' else 'Socket.IO'} x{r['clients']:,}", r)
        for kind in ("sse", "socketio")
        for r in live.get(kind, [])
    ]
    height_in = 0.42 * len(names) + 2.2 + (0.5 * len(live_rows) + 1.6 if live_rows else 0)
    fig = plt.figure(figsize=(15, height_in))
    grid = fig.add_gridspec(
        2 if live_rows else 1, 2, height_ratios=[0.42 * len(names) + 1.2, 0.5 * len(live_rows) + 1.2] if live_rows else [1]
    )
    axes = [fig.add_subplot(grid[0, 0])]
    axes.append(fig.add_subplot(grid[0, 1], sharey=axes[0]))
    colors = {"without indexes": "#c0504d", "with install-indexes": "#4f81bd"}
    height = 0.8 / max(1, len(phases))
    for ax, mode in zip(axes, ("sequential", "concurrent"), strict=True):
        for i, phase in enumerate(phases):
            by_name = {c["case"]: c for c in phase["cases"]}
            ys = [n + i * height for n in range(len(names))]
            p95 = [by_name[n][mode]["p95_ms"] if n in by_name else 0 for n in names]
            p50 = [by_name[n][mode]["p50_ms"] if n in by_name else 0 for n in names]
            ax.barh(ys, p95, height=height, color=colors.get(phase["label"], "#888"), alpha=0.45, label=f"p95, {phase['label']}")
            ax.barh(ys, p50, height=height, color=colors.get(phase["label"], "#888"), label=f"p50, {phase['label']}")
        if mode == "sequential":
            for n, case in enumerate(phases[0]["cases"]):
                budget = case["budget_p95_ms"]
                if budget:
                    ax.plot([budget, budget], [n - 0.1, n + 0.9], color="black", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        conc = phases[0]["concurrency"]
        ax.set_title(
            "sequential (1 connection); black: p95 budget" if mode == "sequential" else f"concurrent ({conc} connections)"
        )
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks([n + 0.4 - height / 2 for n in range(len(names))])
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right", fontsize=8)
    if live_rows:
        ax = fig.add_subplot(grid[1, :])
        modes = live_modes(live)
        bar = 0.8 / max(1, len(modes))
        for i, mode in enumerate(modes):
            ys = [n + i * bar for n in range(len(live_rows))]
            color = MODE_COLORS.get(mode, "#888")
            label = MODE_LABELS.get(mode, mode)
            ax.barh(
                ys,
                [(r.get(mode) or {}).get("p99_ms") or 0 for _, r in live_rows],
                height=bar,
                color=color,
                alpha=0.45,
                label=f"p99, {label}",
            )
            ax.barh(
                ys, [(r.get(mode) or {}).get("p50_ms") or 0 for _, r in live_rows], height=bar, color=color, label=f"p50, {label}"
            )
            budget = LATENCY_BUDGETS_MS.get(mode, 1000)
            for n in range(len(live_rows)):
                ax.plot([budget, budget], [n + i * bar - bar / 2, n + i * bar + bar / 2], color="black", linewidth=1.2)
        ax.set_yticks([n + bar * (len(modes) - 1) / 2 for n in range(len(live_rows))])
        ax.set_yticklabels([name for name, _ in live_rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_title(
            "live: job update committed -> received by every client, one worker "
            "(black: p99 budget, 250 ms with a trigger, 1 s polling)"
        )
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    d = results["dataset"]
    fig.suptitle(f"admin-service latency, {d['jobs']:,} jobs, {results['machine']['cores']} cores ({results['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
