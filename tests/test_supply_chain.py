"""The dependency audit's verdict (.ci/pip_audit.py, run by `make test`) and the container: its
non-root user and healthcheck, its build context and its dependencies."""

from __future__ import annotations

import fnmatch
import importlib.util
import re

from tests.support import ROOT

spec = importlib.util.spec_from_file_location("pip_audit_gate", ROOT / ".ci" / "pip_audit.py")
assert spec is not None and spec.loader is not None
gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate)


def test_a_known_vulnerability_fails_the_audit() -> None:
    code, lines = gate.verdict(
        {
            "dependencies": [
                {"name": "flask", "version": "3.1.3", "vulns": []},
                {"name": "jinja2", "version": "2.0", "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["2.11.3"]}]},
            ]
        }
    )
    assert code == 1
    assert "VULNERABLE jinja2 2.0: PYSEC-0000-1 (fixed in: 2.11.3)" in lines


def test_unreachable_vulnerability_data_warns_without_failing() -> None:
    code, lines = gate.verdict(
        {
            "dependencies": [
                {"name": "flask", "version": "3.1.3", "skip_reason": "Dependency not found on PyPI and could not be audited"},
            ]
        }
    )
    assert code == 0
    assert any(line.startswith("WARNING: pip-audit could not audit 1 of 1") for line in lines)
    assert "WARNING: no package was audited: this run says nothing about known vulnerabilities." in lines


def test_a_clean_audit_passes_quietly() -> None:
    code, lines = gate.verdict({"dependencies": [{"name": "flask", "version": "3.1.3", "vulns": []}]})
    assert (code, lines) == (0, ["pip-audit: no known vulnerabilities in the 1 audited packages."])


def test_the_container_runs_as_a_non_root_user_with_a_readiness_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the last USER must not be root"
    # Everything the app needs is copied before the switch and owned by root: the app cannot rewrite its code.
    assert dockerfile.index("COPY admin_service") < dockerfile.index(f"USER {users[-1]}")
    assert "--chown" not in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n.*?/health/ready", dockerfile, re.M)
    assert "--require-hashes" in dockerfile


def healthcheck_command() -> str:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (.+)$", dockerfile, re.M)
    assert match, "no HEALTHCHECK ... CMD in the Dockerfile"
    return match.group(1)


def test_the_healthcheck_command_passes_on_a_ready_service_and_fails_otherwise(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from tests.support.service import free_port, run_service

    command = healthcheck_command()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    with run_service(database_url, tmp_path) as service:
        ready = subprocess.run(["sh", "-c", command], env={**env, "PORT": str(service.port)}, capture_output=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
    down = subprocess.run(["sh", "-c", command], env={**env, "PORT": str(free_port())}, capture_output=True, timeout=30)
    assert down.returncode != 0


def in_build_context(name: str) -> bool:
    """Whether a top-level file or folder is sent to the Docker build (.dockerignore: patterns in
    order, `!` re-includes, the last match decides; top-level names are all this needs)."""
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name, pattern.lstrip("!").rstrip("/")):
            included = negated
    return included


def test_the_build_context_holds_what_the_image_copies_and_nothing_local() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [src for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for src in line.split()[:-1]]
    assert copied and all(in_build_context(src.rstrip("/").split("/")[0]) for src in copied), copied
    for local in (".venv", ".data", "tests", "bench", ".git", "node_modules", ".ci", "docs", "requirements-dev.txt"):
        assert not in_build_context(local), local


def test_the_image_installs_the_runtime_requirements_only_without_the_embedded_postgresql() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"pip install .*?-r (\S+)", dockerfile) == ["requirements.txt"]
    pinned = {line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    assert "gunicorn" in pinned and "pgserver" not in pinned
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^pgserver==", dev, re.M), "make run/test (requirements-dev.txt) keep the embedded PostgreSQL"
