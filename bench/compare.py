"""A second deployment measured beside ours, case by case, interleaved (A B B A …): another
revision of this service, which the bench runs itself on the same database
(`--compare-rev REV`), or any base URL and token serving the same API on the same dataset
(`--compare-url URL --compare-token TOKEN`: another deployment, or another implementation such
as the Node service this one replaces). Each case's figures are medians over the rounds, and
the ratios say how many times ours is better (throughput ours/theirs, latency theirs/ours).

Interleaving is what makes the ratio trustworthy on a shared machine: whatever else runs slows
both sides of a round alike, where two runs minutes apart each see a different machine."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    token: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("comparison (interleaved with ours, ratios printed)")
    group.add_argument("--compare-rev", help="a git revision of this repository to run beside ours on the same database")
    group.add_argument("--compare-url", help="the base URL of another deployment serving the same dataset")
    group.add_argument(
        "--compare-token", help="its admin bearer token (default: the bench's own, for a deployment sharing its secret)"
    )
    group.add_argument("--compare-label", help="its name in the report (default: the revision or the URL)")
    group.add_argument("--compare-rounds", type=int, default=3, help="interleaved rounds per case (medians)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.compare_rev and args.compare_url:
        parser.error("--compare-rev and --compare-url: one or the other")
    if args.compare_rounds < 1:
        parser.error("--compare-rounds must be at least 1")
    if args.compare_rev:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", f"{args.compare_rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
        )
        if proc.returncode != 0:
            parser.error(f"--compare-rev: no such revision here: {args.compare_rev}")
        args.compare_commit = proc.stdout.strip()


def export_revision(commit: str, into: Path) -> Path:
    """The revision's tree (git archive: no worktree left behind, nothing of ours changed)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@contextmanager
def comparison(args: argparse.Namespace, database_url: str, token: str, workdir: Path) -> Iterator[Target | None]:
    """The other deployment for one phase: a service of the revision started (and stopped) here,
    the given URL, or None when no comparison was asked for."""
    if getattr(args, "compare_rev", None):
        from bench.service import run_service

        tree = workdir / f"compare-{args.compare_commit[:12]}"
        if not tree.exists():
            export_revision(args.compare_commit, tree)
        with run_service(database_url, workdir, root=tree) as service:
            yield Target(args.compare_label or f"revision {args.compare_rev} ({args.compare_commit[:9]})", service.url, token)
    elif getattr(args, "compare_url", None):
        yield Target(args.compare_label or args.compare_url, args.compare_url.rstrip("/"), args.compare_token or token)
    else:
        yield None


RUN_FIELDS = ("rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's figures as the median of each over the rounds; errors and requests summed."""
    out = dict(runs[0])
    for name in RUN_FIELDS:
        out[name] = round(statistics.median(r[name] for r in runs), 3)
    for name in ("errors", "non_2xx", "requests"):
        out[name] = sum(r[name] for r in runs)
    out["rounds"] = len(runs)
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if a and b else None


def interleaved(
    measure: Callable[[str, str], dict[str, Any]], ours: Target, theirs: Target, rounds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(our figures, the comparison) for one case: `measure(url, token)` -> {"sequential", "concurrent"},
    run in the order A B, B A, A B … so that neither side always goes first."""
    mine: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for r in range(rounds):
        order = [(ours, mine), (theirs, other)]
        for target, sink in order if r % 2 == 0 else reversed(order):
            sink.append(measure(target.url, target.token))
    our = {kind: median_run([m[kind] for m in mine]) for kind in ("sequential", "concurrent")}
    their = {kind: median_run([m[kind] for m in other]) for kind in ("sequential", "concurrent")}
    return our, {
        "label": theirs.label,
        "rounds": rounds,
        **their,
        # > 1: ours is better.
        "throughput_ratio_seq": _ratio(our["sequential"]["rps"], their["sequential"]["rps"]),
        "throughput_ratio_conc": _ratio(our["concurrent"]["rps"], their["concurrent"]["rps"]),
        "p50_ratio_seq": _ratio(their["sequential"]["p50_ms"], our["sequential"]["p50_ms"]),
        "p95_ratio_conc": _ratio(their["concurrent"]["p95_ms"], our["concurrent"]["p95_ms"]),
    }


def markdown(phase: dict[str, Any]) -> list[str]:
    """The comparison table of one REST phase (empty when none was run)."""
    cases = [c for c in phase["cases"] if c.get("compare")]
    if not cases:
        return []
    label = cases[0]["compare"]["label"]
    rounds = cases[0]["compare"]["rounds"]
    lines = [
        "",
        f"### Compared with {label}, {phase['label']}",
        "",
        f"Interleaved, {rounds} round(s) per case (A B, B A, …), medians; both on this machine and dataset. "
        "Ratios > 1: ours is better (throughput ours / theirs; latency theirs / ours).",
        "",
        "| case | ours seq p50 | theirs seq p50 | p50 ratio | ours c req/s | theirs c req/s | throughput ratio | "
        "ours c p95 | theirs c p95 | p95 ratio | their errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        o, t = c, c["compare"]
        lines.append(
            f"| {c['case']} | {o['sequential']['p50_ms']:.2f} | {t['sequential']['p50_ms']:.2f} | {t['p50_ratio_seq'] or '—'}× | "
            f"{o['concurrent']['rps']:,.0f} | {t['concurrent']['rps']:,.0f} | **{t['throughput_ratio_conc'] or '—'}×** | "
            f"{o['concurrent']['p95_ms']:.2f} | {t['concurrent']['p95_ms']:.2f} | {t['p95_ratio_conc'] or '—'}× | "
            f"{t['sequential']['errors'] + t['concurrent']['errors']} |"
        )
    return lines


def print_ratios(phase: dict[str, Any], log: Callable[[str], None]) -> None:
    for line in markdown(phase):
        log(line)
