"""The command line as a new user meets it: `make run` (python -m admin_service serve) on the
embedded default, on a busy port and without pgserver; `token` beside a running `serve`; the
options' help; `db seed`."""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from admin_service.__main__ import build_parser
from tests.support import ROOT
from tests.support.postgres import scratch_database
from tests.support.service import free_port

# What a user's shell has when they type `make run`: no database or secret configured.
UNSET = ("DATABASE_URL", "JWT_SECRET", "PORT", "WEB_CONCURRENCY", "EMBEDDED_PG_DIR")


def user_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in UNSET}, "LOG_LEVEL": "WARNING", **extra}


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data dir for the embedded default (mkdtemp: pgserver, running as another OS user under
    root, needs a folder it can traverse, which pytest's tmp_path is not)."""
    folder = Path(tempfile.mkdtemp(prefix="admin-service-serve-"))
    yield folder / "pgdata"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_busy_port_says_so_at_once_and_prints_no_token(busy_port: int, embedded_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", "serve", "--demo-jobs", "10"],
        cwd=ROOT,
        env=user_env(PORT=str(busy_port), EMBEDDED_PG_DIR=str(embedded_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""  # no URLs, no token, no "starting embedded PostgreSQL"
    assert proc.stderr.splitlines() == [f"port {busy_port} is in use; set PORT to a free one (PORT={busy_port + 1} make run)"]
    # Before anything starts (no embedded PostgreSQL, no gunicorn and its five retries of a
    # second each, whose lines would be in stderr): what "at once" means, whatever the load.
    assert not embedded_dir.exists()


def test_serve_without_database_url_or_pgserver_says_it_needs_database_url(embedded_dir: Path) -> None:
    """The production image has no pgserver: serve and the database commands say what to set."""
    # sys.modules["pgserver"] = None makes `import pgserver` fail as if it were not installed.
    without_pgserver = "import sys; sys.modules['pgserver'] = None; from admin_service.__main__ import main; main()"
    env = user_env(PORT=str(free_port()), EMBEDDED_PG_DIR=str(embedded_dir))
    for command in (["serve"], ["db", "upgrade"]):
        proc = subprocess.run(
            [sys.executable, "-c", without_pgserver, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0, command
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "DATABASE_URL is not set, and the embedded PostgreSQL for development (the pgserver package, "
            "in requirements-dev.txt) is not installed: set DATABASE_URL to the PostgreSQL to use"
        ), command


class Serve:
    """`python -m admin_service serve` as `make run` starts it, its stdout read line by line."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "admin_service", "serve", "--demo-jobs", "30"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                # A terminal's foreground job: Ctrl+C signals its whole process group.
                start_new_session=True,
            )
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def banner(self, timeout: float = 120) -> list[str]:
        """The lines it printed up to the banner's last one."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if line == "Stop with Ctrl+C.":
                return seen
        raise AssertionError(f"no banner; printed {seen}\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> int:
        """Ctrl+C, as a terminal sends it: SIGINT to every process of the foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def line_after(lines: list[str], label: str) -> str:
    [found] = [line.split(label, 1)[1].strip() for line in lines if line.strip().startswith(label)]
    return found


@pytest.mark.timeout(240)
def test_make_run_prints_the_dashboard_a_pasteable_curl_and_psql_once_serving_and_token_works_beside_it(
    embedded_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    serve = Serve(
        user_env(PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY="1", EMBEDDED_PG_DIR=str(embedded_dir)), tmp_path / "serve.log"
    )
    try:
        lines = serve.banner()
        # The headline is the dashboard, signed in through the fragment, and it answers already.
        [headline] = [line for line in lines if line.startswith("admin-service is up: ")]
        url = headline.removeprefix("admin-service is up: ")
        assert url.startswith(f"http://localhost:{port}/admin/dashboard#token=")
        page = requests.get(url.split("#", 1)[0], timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        for path in ("/", "/admin"):
            answer = requests.get(f"http://localhost:{port}{path}", allow_redirects=False, timeout=10)
            assert answer.status_code in (302, 308) and answer.headers["Location"].endswith("/admin/dashboard"), path

        # The curl line, pasted into a shell, answers with the stats.
        curl = line_after(lines, "Try:")
        pasted = subprocess.run(["sh", "-c", f"{curl} -s"], capture_output=True, text=True, timeout=30)
        assert pasted.returncode == 0 and '"success":true' in pasted.stdout.replace(" ", ""), pasted

        # The psql line, pasted, reaches the embedded database with its demo data.
        psql = line_after(lines, "Database:")
        counted = subprocess.run(
            ["sh", "-c", f"{psql} -Atc 'SELECT count(*) FROM archive.analysis_jobs'"], capture_output=True, text=True, timeout=30
        )
        assert counted.stdout.strip() == "30", counted

        # `token` finds the embedded database and its secret by itself; the service takes its token.
        made = subprocess.run(
            [sys.executable, "-m", "admin_service", "token", "--email", "ops@example.com"],
            cwd=ROOT,
            env=user_env(EMBEDDED_PG_DIR=str(embedded_dir)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        stats = requests.get(
            f"http://localhost:{port}/admin/jobs/stats", headers={"Authorization": f"Bearer {made.stdout.strip()}"}, timeout=10
        )
        assert stats.status_code == 200 and stats.json()["data"]["overview"]["total"] == 30
    finally:
        code = serve.stop()
    # Ctrl+C: a graceful stop, without a traceback from each worker.
    assert code == 0
    assert "Traceback" not in (tmp_path / "serve.log").read_text(errors="replace")


def every_parser(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path) or "(top)", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, (*path, name))


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    for command, parser in every_parser(build_parser()):
        shown = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (command, action.dest)
            if not action.required:
                assert "default" in action.help or f"(default: {action.default})" in " ".join(shown.split()), (
                    command,
                    action.dest,
                )

    shown = subprocess.run(
        [sys.executable, "-m", "admin_service", "db", "seed", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout
    assert "(default: 10000)" in " ".join(shown.split())


@pytest.mark.parametrize("jobs", ["0", "-5"])
def test_seed_refuses_fewer_than_one_job(jobs: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", "db", "seed", "--jobs", jobs],
        cwd=ROOT,
        env=user_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/never-reached"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"argument --jobs: must be at least 1, got {jobs}" in proc.stderr


def test_seed_says_truthfully_what_it_inserted_into_a_database_that_holds_data(server_url: str) -> None:
    with scratch_database(server_url, f"admin_service_seed_{uuid.uuid4().hex[:8]}") as url:

        def seed(jobs: int) -> str:
            proc = subprocess.run(
                [sys.executable, "-m", "admin_service", "db", "seed", "--jobs", str(jobs)],
                cwd=ROOT,
                env=user_env(DATABASE_URL=url, JWT_SECRET="x" * 32),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        assert seed(40).startswith("inserted 40 jobs, ")
        again = seed(40)
        assert again.startswith("inserted 0 jobs, ") and "the database already held 40 jobs" in again
        # The same deterministic jobs and 20 more: only the new ones are inserted.
        assert seed(60).startswith("inserted 20 jobs, ")
