"""The settings the tests run the app with."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Engine

from admin_service import create_app
from admin_service.config import Settings, load_settings

TEST_SECRET = "test-secret-for-admin-service-0123456789"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    # Generous limits: the suites send many requests and bad tokens from one address; the
    # tests of the limits set their own.
    env = {
        "JWT_SECRET": TEST_SECRET,
        "RATE_LIMIT": "100000 per minute",
        "AUTH_FAILURE_LIMIT": "100000 per minute",
        # Each in-process test app counts on its own (as before the shared store): the windows
        # of one test never meet another's. The service under gunicorn runs on its default
        # (database://); the tests of the shared stores set theirs.
        "RATE_LIMIT_STORAGE_URI": "memory://",
        "SSE_MAX_STREAMS_PER_USER": "100000",
        "LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in overrides.pop("env", {}).items()})
    return load_settings(env, database_url=database_url, **overrides)


def app_with(database_url: str, engine: Engine, **env: Any) -> Flask:
    return create_app(make_settings(database_url, env=env), engine)
