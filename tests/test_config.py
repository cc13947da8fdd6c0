"""Settings are validated at start: every bad value stops the service with its variable named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from admin_service.config import ConfigError, load_settings
from tests.support import ROOT

GOOD = {"JWT_SECRET": "a-long-enough-test-secret-0123456789"}


def test_good_environment_loads() -> None:
    settings = load_settings(
        {
            **GOOD,
            "PORT": "8080",
            "STATS_TIMEZONE": "Europe/Berlin",
            "ALLOWED_ORIGINS": "https://a.example.com, http://localhost:3000",
        }
    )

    assert settings.port == 8080
    assert settings.stats_timezone == "Europe/Berlin"
    assert settings.allowed_origins == ("https://a.example.com", "http://localhost:3000")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("JOB_STATS_INTERVAL_MS", "-1"),
        ("JOB_STATS_INTERVAL_MS", "soon"),
        ("DB_POOL_MAX", "0"),
        ("DB_STATEMENT_TIMEOUT_MS", "1.5"),
        ("STATS_TIMEZONE", "Mars/Base"),
        ("STATS_TIMEZONE", "../../etc/passwd"),
        ("ADMIN_SCHEMA", "x;drop"),
        ("ADMIN_SCHEMA", "Admin"),
        ("JWT_ALGORITHMS", "HS256,RS256"),
        ("JWT_ALGORITHMS", "none"),
        ("RATE_LIMIT", "lots"),
        ("RATE_LIMIT", "0 per minute"),
        ("AUTH_FAILURE_LIMIT", "often"),
        ("AUTH_FAILURE_LIMIT", "0 per hour"),
        ("RATE_LIMIT_STORAGE_URI", "mongodb://x"),
        ("ALLOWED_ORIGINS", "notanorigin"),
        ("ALLOWED_ORIGINS", "https://admin.example.com/path"),
        ("DATABASE_URL", "mysql://x"),
        ("LOG_LEVEL", "chatty"),
        ("TRUST_PROXY", "maybe"),
        ("JWT_SECRET", "short"),
    ],
)
def test_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, name: value})

    assert name in str(caught.value)


def test_missing_jwt_secret_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"PORT": "3007"})

    assert "JWT_SECRET" in str(caught.value)


def test_public_key_algorithms_without_a_key_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"JWT_ALGORITHMS": "RS256"})

    assert "JWT_PUBLIC_KEY" in str(caught.value)


def run_serve(extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **GOOD,
        # A database URL keeps `serve` from starting the embedded server; it is never reached.
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "admin_service", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("port", ["abc", "70000"])
def test_serve_with_a_bad_port_exits_naming_port(port: str) -> None:
    proc = run_serve({"PORT": port})

    assert proc.returncode != 0
    assert "PORT" in proc.stderr
    assert port in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_with_a_bad_port_option_exits_naming_port() -> None:
    proc = run_serve({}, "--port", "99999")

    assert proc.returncode != 0
    assert "PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
