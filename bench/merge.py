"""Put the REST cases and live rows of a partial run (`bench/run.py --only ... --out DIR`; live
rows with --sse/--sockets) into a full run's results, replacing the cases of the same name in the
same phase and the live rows of the same transport and client count, and write the report
again: re-measuring what a change touched without a full run. The report says which were
re-measured, when, and under what load (results.json: `remeasured`).

    python -m bench.merge /tmp/partial/results.json            # into bench/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def merge(full: dict[str, Any], partial: dict[str, Any]) -> list[str]:
    """Replace (or add) each partial phase's cases in the full run's phase of the same label;
    the names replaced, as "phase: case"."""
    replaced = []
    phases = {phase["label"]: phase for phase in full["rest"]}
    for phase in partial.get("rest", []):
        target = phases.get(phase["label"])
        if target is None:
            raise SystemExit(f"the full run has no phase {phase['label']!r}")
        index = {case["case"]: n for n, case in enumerate(target["cases"])}
        for case in phase["cases"]:
            case = {**case, "remeasured": partial["date"]}
            if case["case"] in index:
                target["cases"][index[case["case"]]] = case
            else:
                target["cases"].append(case)
            replaced.append(f"{phase['label']}: {case['case']}")
    replaced += _merge_live(full.get("live") or {}, partial.get("live") or {}, partial["date"])
    full.setdefault("remeasured", []).append(
        {
            "date": partial["date"],
            "command": partial.get("command", ""),
            "loadavg_start": partial["machine"]["loadavg_start"],
            "loadavg_end": partial["machine"].get("loadavg_end"),
            "cases": replaced,
        }
    )
    return replaced


def _merge_live(full: dict[str, Any], partial: dict[str, Any], date: str) -> list[str]:
    """The partial run's live rows in place of the full run's of the same transport and client
    count (measured with the same updates and spacing, else refused)."""
    rows = [(kind, row) for kind in ("sse", "socketio") for row in partial.get(kind, [])]
    if not rows:
        return []
    for key in ("updates", "spacing_s"):
        if full.get(key) != partial.get(key):
            raise SystemExit(f"the live rows were measured with another {key} ({partial.get(key)} against {full.get(key)})")
    replaced = []
    for kind, row in rows:
        row = {**row, "remeasured": date}
        target = full.setdefault(kind, [])
        index = {r["clients"]: n for n, r in enumerate(target)}
        if row["clients"] in index:
            target[index[row["clients"]]] = row
        else:
            target.append(row)
        replaced.append(f"live: {'SSE' if kind == 'sse' else 'Socket.IO'} x{row['clients']:,}")
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("partial", type=Path, help="results.json of the partial run")
    parser.add_argument("--into", type=Path, default=ROOT / "bench" / "results.json", help="the full run's results.json")
    args = parser.parse_args()
    full, partial = json.loads(args.into.read_text()), json.loads(args.partial.read_text())
    if full["dataset"]["jobs"] != partial["dataset"]["jobs"]:
        raise SystemExit(
            f"the runs measured different datasets ({full['dataset']['jobs']:,} and {partial['dataset']['jobs']:,} jobs)"
        )
    replaced = merge(full, partial)
    from bench import report

    folder = args.into.parent
    suffix = report.size_suffix(full["dataset"]["jobs"])
    args.into.write_text(json.dumps(full, indent=2, default=str) + "\n")
    report.write_markdown(full, folder / f"RESULTS{suffix}.md")
    report.write_chart(full, folder / f"latency{suffix}.png")
    print(f"{len(replaced)} cases re-measured into {args.into}: " + ", ".join(replaced))


if __name__ == "__main__":
    main()
