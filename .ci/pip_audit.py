"""Known-vulnerability audit of the pinned runtime requirements (run by `make test`).

    python .ci/pip_audit.py [requirements.txt]

Runs pip-audit on the hash-pinned file without resolving (`--require-hashes --disable-pip`)
against its default vulnerability service, PyPI's JSON API. A known vulnerability fails the
run. A package that could not be audited does not: where the vulnerability data cannot be
reached (a network that only lets package downloads through answers 404 for PyPI's per-version
JSON, and OSV is not reachable at all) the audit proves nothing, so this prints a clear WARNING
naming what was not audited and exits 0 instead of passing silently (pip-audit itself says
"No known vulnerabilities found" in that case) or failing every CI run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TIMEOUT_S = 180


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """(exit code, lines to print) for pip-audit's JSON report."""
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    lines: list[str] = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            lines.append(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})")
    if skipped:
        audited = len(deps) - len(skipped)
        lines.append(
            f"WARNING: pip-audit could not audit {len(skipped)} of {len(deps)} packages "
            f"(vulnerability data unreachable from here?): {', '.join(d['name'] for d in skipped)}"
        )
        if audited == 0:
            lines.append("WARNING: no package was audited: this run says nothing about known vulnerabilities.")
    if not vulnerable:
        lines.append(f"pip-audit: no known vulnerabilities in the {len(deps) - len(skipped)} audited packages.")
    return (1 if vulnerable else 0), lines


def main(argv: list[str]) -> int:
    requirements = Path(argv[0] if argv else "requirements.txt")
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--require-hashes",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "-r",
        str(requirements),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        print(f"WARNING: pip-audit did not finish within {TIMEOUT_S} s: vulnerabilities NOT checked.")
        return 0
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        # pip-audit could not run at all (for example no network): say so, do not fail CI.
        print(f"WARNING: pip-audit failed (exit {done.returncode}): vulnerabilities NOT checked.")
        print(done.stderr.strip()[-2000:])
        return 0
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
