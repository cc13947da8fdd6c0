"""The benchmark and soak commands (bench/) run as `make bench` / `make soak` would, quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_harness(module: str, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
