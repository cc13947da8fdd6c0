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
            every = all(run[m]["every_receiver_every_event"] for m in ("polling", "notify_trigger"))
            rows.append(
                (
                    "10,000 SSE streams: every stream receives every event",
                    f"{run['polling']['received']:,}/{run['polling']['expected']:,} polling, "
                    f"{run['notify_trigger']['received']:,}/{run['notify_trigger']['expected']:,} trigger",
                    "live",
                    every,
                )
            )
    for kind in ("sse", "socketio"):
        for run in live.get(kind, []):
            name = f"{'SSE' if kind == 'sse' else 'Socket.IO'} x{run['clients']:,}"
            trig, poll = run["notify_trigger"], run["polling"]
            rows.append(
                (
                    f"{name}: update latency p99 ≤ 250 ms with the trigger",
                    f"{_f(trig['p99_ms'])} ms",
                    "live",
                    trig["p99_ms"] is not None and trig["p99_ms"] <= 250 and trig["every_receiver_every_event"],
                )
            )
            rows.append(
                (
                    f"{name}: update latency p99 ≤ 1 s without it",
                    f"{_f(poll['p99_ms'])} ms",
                    "live",
                    poll["p99_ms"] is not None and poll["p99_ms"] <= 1000 and poll["every_receiver_every_event"],
                )
            )
    return rows


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m, d = results["machine"], results["dataset"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {results['date']} by `make bench` (`{results.get('command', '')}`), {results.get('total_seconds', 0):,.0f} s in all.",
        "Every figure below comes from that run; `bench/results.json` has them all (and the plans).",
        "",
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
        f"- tables: jobs {d['jobs_table_mb']:,} MB, results {d['results_table_mb']:,} MB (with indexes)",
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
                f"| {c['case']} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['rps']:,.0f} | "
                f"{k['p50_ms']:.2f} | {k['p95_ms']:.2f} | {k['p99_ms']:.2f} | {k['rps']:,.0f} | "
                f"{_f(c['db_ms'], 2) if c['db_statements'] else '0 (no query)'} | "
                f"{_f(c['overhead_ratio']) + '×' if c['overhead_ratio'] else '—'} | {s['errors'] + k['errors']} | "
                f"{_f(c.get('loadavg_1m'))} |"
            )
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
    live = results.get("live", {})
    if live.get("sse") or live.get("socketio"):
        lines += [
            "",
            "## Live",
            "",
            f"One gunicorn gevent worker (WEB_CONCURRENCY=1), started afresh for each row, default capture/tail "
            f"settings (CAPTURE_POLL_MS=500). "
            f"Latency: a job UPDATE committed → its job-update parsed by every client; {live['updates']} updates "
            f"{live['spacing_s']} s apart per mode, polling first, then with `db install-notify-trigger`; "
            "clients in their own process (Node: `bench/sse_clients.js`, `bench/sio_clients.js` with socket.io-client).",
            "",
            "| transport | clients | connected | connect s | worker RSS MiB (idle → open) | KiB/client | polling p50 / p99 / max ms | received | trigger p50 / p99 / max ms | received | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind in ("sse", "socketio"):
            for r in live.get(kind, []):
                p, t = r["polling"], r["notify_trigger"]
                lines.append(
                    f"| {'SSE' if kind == 'sse' else 'Socket.IO (websocket)'} | {r['clients']:,} | {r['connected']:,} | "
                    f"{r['connect_seconds']} | {r['worker_rss_idle_mib']:.0f} → {r['worker_rss_mib']:.0f} | "
                    f"{r['rss_per_client_kib']} | {_f(p['p50_ms'])} / {_f(p['p99_ms'])} / {_f(p['max_ms'])} | "
                    f"{p['received']:,}/{p['expected']:,} | {_f(t['p50_ms'])} / {_f(t['p99_ms'])} / {_f(t['max_ms'])} | "
                    f"{t['received']:,}/{t['expected']:,} | {_f(r.get('loadavg_1m'))} |"
                )
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
        for i, (mode, color) in enumerate((("polling", "#c0504d"), ("notify_trigger", "#4f81bd"))):
            ys = [n + i * 0.4 for n in range(len(live_rows))]
            ax.barh(
                ys,
                [r[mode]["p99_ms"] or 0 for _, r in live_rows],
                height=0.4,
                color=color,
                alpha=0.45,
                label=f"p99, {mode.replace('_', ' ')}",
            )
            ax.barh(
                ys,
                [r[mode]["p50_ms"] or 0 for _, r in live_rows],
                height=0.4,
                color=color,
                label=f"p50, {mode.replace('_', ' ')}",
            )
        for n in range(len(live_rows)):
            ax.plot([250, 250], [n + 0.2, n + 0.6], color="black", linewidth=1.2)
            ax.plot([1000, 1000], [n - 0.2, n + 0.2], color="black", linewidth=1.2, linestyle=":")
        ax.set_yticks([n + 0.2 for n in range(len(live_rows))])
        ax.set_yticklabels([name for name, _ in live_rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_title(
            "live: job update committed -> received by every client, one worker "
            "(budgets p99: 250 ms with the trigger, 1 s without)"
        )
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    d = results["dataset"]
    fig.suptitle(f"admin-service latency, {d['jobs']:,} jobs, {results['machine']['cores']} cores ({results['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
