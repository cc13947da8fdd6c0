"""The action tests' fixtures: no actions, events or archive rows left from another test, an
operator (a superadmin: ACTION_ROLES' default) and an app with a transport configured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.live import drop_trigger
from tests.support.settings import app_with
from tests.support.tokens import bearer, token_for
from tests.test_dashboard import browser, open_page  # noqa: F401 (the browser fixtures, for test_dashboard_actions.py)

ACTION_TABLES = ("action_items", "actions", "idempotency_keys")
# Never contacted by the in-process tests (no dispatcher runs in a test app): it only makes
# the routes accept actions.
UNUSED_BROKER = {"ACTION_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}


def reset_actions(engine: Engine, settings: Settings) -> None:
    tables = ", ".join(f'"{settings.admin_schema}".{t}' for t in ACTION_TABLES)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables}")


@pytest.fixture
def clean(engine: Engine, data: Data, settings: Settings) -> Iterator[Data]:
    reset_event_log(engine, settings)
    reset_actions(engine, settings)
    drop_trigger(engine, settings)
    yield data


@pytest.fixture
def operator(clean: Data) -> dict[str, Any]:
    return clean.user(user_type="superadmin")


@pytest.fixture
def as_operator(operator: dict[str, Any]) -> dict[str, str]:
    return bearer(token_for(operator))


@pytest.fixture
def acting_client(database_url: str, engine: Engine, clean: Data) -> FlaskClient:
    return app_with(database_url, engine, **UNUSED_BROKER).test_client()
