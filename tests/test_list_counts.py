"""Exact totals of filtered lists on a big table: counted once per LIST_COUNT_INTERVAL_MS for the
whole deployment (ADMIN_SCHEMA.list_counts), countMode exact-cached with countedAt."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from admin_service import create_app
from tests.support.factories import Data
from tests.support.settings import make_settings
from tests.test_jobs_list import get, ok

BIG = 100_500  # beyond EXACT_COUNT_MAX_ROWS: counting per request is what the cache replaces
IQ = BIG // 4  # every fourth row is an IQ Test


@pytest.fixture
def big(data: Data, settings: Any) -> Data:
    data.execute(f'DELETE FROM "{settings.admin_schema}".list_counts')
    data.execute(
        # One statement of 100,000 rows and 8 indexes outlasts the suite's statement timeout on a busy machine.
        "SET LOCAL statement_timeout = 0; "
        "INSERT INTO archive.analysis_jobs (job_id, user_id, status, assessment_name, created_at) "
        "SELECT 'big-' || g, gen_random_uuid(), CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, "
        "CASE WHEN g % 4 = 0 THEN 'IQ Test' ELSE 'Big Five' END, now() - g * interval '1 second' "
        "FROM generate_series(1, :n) AS g",
        n=BIG,
    )
    data.execute("ANALYZE archive.analysis_jobs")
    return data


def instance(settings: Any, engine: Engine, interval_ms: int) -> FlaskClient:
    """An app of its own (another worker or instance of the deployment) over the same database."""
    env = {"LIST_COUNT_INTERVAL_MS": str(interval_ms)}
    return create_app(make_settings(settings.database_url, env=env), engine).test_client()


def pagination(client: FlaskClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(get(client, auth, {"limit": 5, **params}))["pagination"]
    return result


def test_a_second_request_in_the_interval_does_not_recount_on_any_instance(
    big: Data, settings: Any, engine: Engine, auth: dict[str, str]
) -> None:
    first, second = instance(settings, engine, 3_600_000), instance(settings, engine, 3_600_000)
    p = pagination(first, auth, assessment_name="iq")
    assert (p["total"], p["countMode"], p["totalPages"]) == (IQ, "exact-cached", IQ // 5)
    counted_at = datetime.fromisoformat(p["countedAt"])
    big.job(assessment_name="IQ Test")
    for client in (first, second):
        again = pagination(client, auth, assessment_name="iq", page=3)
        assert (again["total"], again["countMode"], again["countedAt"]) == (IQ, "exact-cached", p["countedAt"])
    # Another filter is a count of its own; the status-only list keeps the shared per-status counts.
    other = pagination(first, auth, assessment_name="five")
    assert (other["total"], other["countMode"]) == (BIG - IQ, "exact-cached")
    assert datetime.fromisoformat(other["countedAt"]) >= counted_at
    assert pagination(first, auth, assessment_name="iq", count="none")["countedAt"] is None


def test_a_change_is_reflected_after_the_interval(big: Data, settings: Any, engine: Engine, auth: dict[str, str]) -> None:
    client = instance(settings, engine, 250)
    before = pagination(client, auth, assessment_name="iq", status="failed")
    assert before["countMode"] == "exact-cached"
    big.job(assessment_name="IQ Test", status="failed")
    deadline = time.monotonic() + 30
    after = before
    while after["total"] == before["total"]:
        assert time.monotonic() < deadline, "the new job was never counted"
        after = pagination(client, auth, assessment_name="iq", status="failed")
    assert after["total"] == before["total"] + 1
    assert datetime.fromisoformat(after["countedAt"]) > datetime.fromisoformat(before["countedAt"])


def test_a_stale_total_being_recounted_elsewhere_is_served_as_it_was(
    big: Data, settings: Any, engine: Engine, auth: dict[str, str]
) -> None:
    """While one request recounts (its claim is fresh), the others serve the last total with its
    own countedAt instead of all counting at once; once the claim is old, a request counts."""
    client = instance(settings, engine, 250)
    first = pagination(client, auth, assessment_name="iq")
    big.job(assessment_name="IQ Test")
    table = f'"{settings.admin_schema}".list_counts'
    big.execute(f"UPDATE {table} SET counted_at = counted_at - interval '1 hour', counting_since = now()")
    stale = pagination(client, auth, assessment_name="iq")
    assert stale["total"] == IQ
    assert datetime.fromisoformat(stale["countedAt"]) < datetime.fromisoformat(first["countedAt"])
    big.execute(f"UPDATE {table} SET counting_since = now() - interval '1 hour'")
    assert pagination(client, auth, assessment_name="iq")["total"] == IQ + 1
