"""The smoke command against the service running under gunicorn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT
from tests.support.service import run_service
from tests.support.tokens import token_for


def test_smoke_command_passes_against_running_service(database_url: str, data, admin, tmp_path: Path) -> None:
    user = data.user()
    done = data.job(user=user, status="completed")
    data.result(done)
    data.job(user=user, status="queued")
    with run_service(database_url, tmp_path) as service:
        proc = subprocess.run(
            [sys.executable, "-m", "admin_service", "smoke", "--url", service.url, "--token", token_for(admin)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "11/11 checks passed" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_smoke_command_fails_with_a_bad_token(database_url: str, data, tmp_path: Path) -> None:
    with run_service(database_url, tmp_path) as service:
        proc = subprocess.run(
            [sys.executable, "-m", "admin_service", "smoke", "--url", service.url, "--token", "not-a-token"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert "FAIL stats" in proc.stdout
