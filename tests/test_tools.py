"""`make test` on a machine without the programs its tests run (Chromium, Node/npm, wrk, nginx,
redis-server, curl): as root it installs them (.ci/tools.sh); without a way to install them it
stops at once with one line naming what is missing and the command that installs it, before any
test runs (and so before any test could error or skip for a missing tool).

The missing tools are simulated with a PATH that lacks them (this machine has them), root's
apt-get with a stand-in that records what it was asked to install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT


def bare_path(folder: Path, *commands: str) -> str:
    """A PATH holding only `commands` (no apt-get, no tools): a user's machine without them."""
    folder.mkdir()
    for command in commands:
        found = shutil.which(command)
        assert found, command
        (folder / command).symlink_to(found)
    return str(folder)


def test_make_test_stops_at_once_naming_what_is_missing_and_how_to_install_it(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make
    started = time.monotonic()
    proc = subprocess.run(
        [make, "-s", "test"],
        cwd=ROOT,
        env={"PATH": bare_path(tmp_path / "bin", "id"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started

    assert proc.returncode != 0
    assert elapsed < 10, elapsed
    assert proc.stdout == ""  # nothing else ran: no lint, no venv, no pytest
    # The line, then only make's own note of the failed target. nginx is found in /usr/sbin,
    # which the Makefile adds to PATH (a user's PATH may lack it; the nginx test runs it there).
    ours, *rest = proc.stderr.splitlines()
    assert ours == (
        "missing: chromium nodejs npm wrk redis-server curl (Debian packages); "
        "install them with: sudo apt-get install -y chromium nodejs npm wrk redis-server curl"
    )
    assert all(line.startswith("make: *** ") for line in rest), rest


def test_as_root_make_test_tools_installs_what_is_missing_with_apt_get(tmp_path: Path) -> None:
    """Root with apt-get (here a stand-in that records its calls and provides the commands)."""
    bin_dir = Path(bare_path(tmp_path / "bin"))
    log = tmp_path / "apt-get.log"
    stub(bin_dir, "id", "echo 0")
    stub(
        bin_dir,
        "apt-get",
        f'echo "$*" >> {log}\n'
        f'for p in "$@"; do case $p in -*|install|update) ;; nodejs) : > {bin_dir}/node; /bin/chmod +x {bin_dir}/node ;; '
        f"*) : > {bin_dir}/$p; /bin/chmod +x {bin_dir}/$p ;; esac; done",
    )
    proc = subprocess.run(
        [shutil.which("make") or "make", "-s", "test-tools"],
        cwd=ROOT,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "installing Debian packages the tests need: chromium nodejs npm wrk redis-server curl"
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium nodejs npm wrk redis-server curl"]


def stub(folder: Path, command: str, body: str) -> None:
    (folder / command).write_text(f"#!/bin/sh\n{body}\n")
    (folder / command).chmod(0o755)


def test_a_present_tool_is_not_reported(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["/bin/sh", ".ci/tools.sh", "wrk", "node"],
        cwd=ROOT,
        env={"PATH": bare_path(tmp_path / "bin", "id", "wrk")},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert proc.returncode == 1
    assert proc.stderr == "missing: nodejs (Debian packages); install them with: sudo apt-get install -y nodejs\n"


def test_a_skipped_test_fails_the_run(tmp_path: Path) -> None:
    """What a test skips proves nothing, so a run with a skip does not pass (tests/conftest.py)."""
    (tmp_path / "test_needs_a_tool.py").write_text(
        "import pytest\n\ndef test_passes():\n    pass\n\ndef test_needs_a_tool():\n    pytest.skip('the tool is missing')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 1, proc.stdout
    assert "1 skipped test(s) fail the run: a skip is not a pass" in proc.stdout
