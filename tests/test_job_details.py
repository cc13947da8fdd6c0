"""GET /admin/jobs/<id> and /admin/jobs/<id>/results against real rows."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from admin_service import create_app
from admin_service.db.engine import make_engine
from admin_service.db.fixtures import create_fixture_tables
from tests.support.envelopes import assert_error as assert_error_envelope
from tests.support.factories import JOB_COLUMNS, Data
from tests.support.postgres import scratch_database
from tests.support.settings import make_settings
from tests.support.tokens import token_for

RESULT_JOB_KEYS = {"id", "job_id", "status", "assessment_name", "completed_at", "user_id", "created_at"}


def parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, datetime):
        return parse_ts(actual) == expected
    if expected is None:
        return actual is None
    return str(actual) == str(expected) if isinstance(expected, uuid.UUID) else actual == expected


def get_ok(client: FlaskClient, path: str, auth: dict[str, str]) -> dict[str, Any]:
    response = client.get(path, headers=auth)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body["data"]


def assert_error(client: FlaskClient, path: str, auth: dict[str, str], status: int, code: str) -> dict[str, Any]:
    body = assert_error_envelope(client.get(path, headers=auth), status, code)
    assert body["error"]["details"] == []
    return body


# --- details ---------------------------------------------------------------------------


def test_details_by_row_id_and_by_job_id(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    owner = data.user(username="marta")
    created = datetime.now(UTC) - timedelta(hours=2)
    job = data.job(
        user=owner,
        status="completed",
        created_at=created,
        updated_at=created + timedelta(seconds=300),
        processing_started_at=created + timedelta(seconds=12, milliseconds=500),
        completed_at=created + timedelta(seconds=300),
        assessment_name="AI-Based IQ Test",
        priority=7,
        retry_count=1,
    )
    data.job(user=owner, status="queued")  # a neighbour that must not be returned

    by_id = get_ok(client, f"/admin/jobs/{job['id']}", auth)
    by_job_id = get_ok(client, f"/admin/jobs/{job['job_id']}", auth)

    assert by_id == by_job_id
    for column in JOB_COLUMNS:
        assert same_value(by_id[column], job[column]), column
    assert by_id["user"] == {"id": owner["id"], "email": owner["email"], "username": "marta"}
    assert by_id["processingTimeSeconds"] == pytest.approx(287.5)
    assert by_id["queueWaitSeconds"] == pytest.approx(12.5)


def test_upper_case_row_id_finds_the_job(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    job = data.job(status="failed", error_message="Model timeout after 300s")

    found = get_ok(client, f"/admin/jobs/{job['id'].upper()}", auth)

    assert found["id"] == job["id"]
    assert found["error_message"] == "Model timeout after 300s"


def test_row_id_wins_over_a_job_id_that_is_the_same_uuid(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    first = data.job(status="completed", completed_at=datetime.now(UTC))
    # Business ids are often uuid strings: this one spells the first row's primary key.
    second = data.job(status="failed", job_id=first["id"])
    third = data.job(status="queued", job_id=str(uuid.uuid4()))

    assert get_ok(client, f"/admin/jobs/{first['id']}", auth)["id"] == first["id"]
    assert get_ok(client, f"/admin/jobs/{second['id']}", auth)["id"] == second["id"]
    # A uuid-shaped job_id that is no row id still finds its job.
    assert get_ok(client, f"/admin/jobs/{third['job_id']}", auth)["id"] == third["id"]


def test_processing_job_reports_time_so_far(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    created = datetime.now(UTC) - timedelta(minutes=10)
    started = created + timedelta(seconds=45)
    job = data.job(status="processing", created_at=created, processing_started_at=started)

    before = datetime.now(UTC)
    details = get_ok(client, f"/admin/jobs/{job['id']}", auth)
    after = datetime.now(UTC)

    assert (
        (before - started).total_seconds() - 0.01 <= details["processingTimeSeconds"] <= (after - started).total_seconds() + 0.01
    )
    assert details["queueWaitSeconds"] == pytest.approx(45)
    assert details["completed_at"] is None


def test_queued_job_reports_wait_so_far_and_no_processing_time(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    created = datetime.now(UTC) - timedelta(minutes=3)
    job = data.job(status="queue", created_at=created)  # older writers' spelling

    before = datetime.now(UTC)
    details = get_ok(client, f"/admin/jobs/{job['job_id']}", auth)
    after = datetime.now(UTC)

    assert details["status"] == "queued"
    assert details["processingTimeSeconds"] is None
    assert (before - created).total_seconds() - 0.01 <= details["queueWaitSeconds"] <= (after - created).total_seconds() + 0.01


def test_completed_job_without_start_time_counts_from_creation(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    created = datetime.now(UTC) - timedelta(hours=1)
    job = data.job(status="completed", created_at=created, completed_at=created + timedelta(seconds=95))

    details = get_ok(client, f"/admin/jobs/{job['id']}", auth)

    assert details["processingTimeSeconds"] == pytest.approx(95)
    assert details["queueWaitSeconds"] is None


def test_user_is_null_when_the_user_row_is_missing(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    job = data.job(status="queued", user_id=str(uuid.uuid4()))

    details = get_ok(client, f"/admin/jobs/{job['id']}", auth)

    assert details["user"] is None
    assert details["user_id"] == job["user_id"]


@pytest.mark.parametrize(
    "ref",
    [
        str(uuid.uuid4()),
        "no-such-job",
        "x" * 300,  # longer than job_id can be
        "%00",  # a NUL byte cannot be in any stored id
        "job%20with%20spaces",
    ],
    ids=["uuid", "job-id", "300-chars", "nul", "spaces"],
)
def test_missing_job_is_404_in_the_envelope(client: FlaskClient, auth: dict[str, str], data: Data, ref: str) -> None:
    data.job(status="queued")

    assert_error(client, f"/admin/jobs/{ref}", auth, 404, "NOT_FOUND")
    assert_error(client, f"/admin/jobs/{ref}/results", auth, 404, "NOT_FOUND")


def test_details_need_an_admin(client: FlaskClient, data: Data) -> None:
    job = data.job(status="queued")
    plain_user = data.user()

    assert client.get(f"/admin/jobs/{job['id']}").status_code == 401
    response = client.get(f"/admin/jobs/{job['id']}", headers={"Authorization": f"Bearer {token_for(plain_user)}"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"


# --- results ---------------------------------------------------------------------------


def test_results_give_the_job_summary_and_every_result_column(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    owner = data.user()
    created = datetime.now(UTC) - timedelta(minutes=20)
    job = data.job(
        user=owner,
        status="completed",
        created_at=created,
        completed_at=created + timedelta(minutes=4),
        assessment_name="Custom Assessment",
    )
    result = data.result(
        job,
        test_data=json.dumps({"questions": 60, "language": "en"}),
        test_result=json.dumps({"archetype": "The Builder", "scores": {"openness": 12, "extraversion": 88}}),
        raw_responses=json.dumps({"answers": [5, 4, 3, 2, 1]}),
        is_public=True,
    )
    with data.engine.connect() as conn:
        stored = (
            conn.execute(text("SELECT * FROM archive.analysis_results WHERE id = :id"), {"id": result["id"]}).mappings().one()
        )

    for ref in (job["id"], job["job_id"]):
        payload = get_ok(client, f"/admin/jobs/{ref}/results", auth)
        assert set(payload["job"]) == RESULT_JOB_KEYS
        for key in RESULT_JOB_KEYS:
            assert same_value(payload["job"][key], job[key]), key
        assert set(payload["result"]) == set(stored.keys())
        for column, value in stored.items():
            assert same_value(payload["result"][column], value), column
        assert payload["result"]["test_result"]["scores"]["extraversion"] == 88
        assert payload["result"]["is_public"] is True


def test_job_without_result_is_result_not_found(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    running = data.job(status="processing", processing_started_at=datetime.now(UTC))

    body = assert_error(client, f"/admin/jobs/{running['id']}/results", auth, 404, "RESULT_NOT_FOUND")
    assert running["job_id"] in body["error"]["message"] or running["id"] in body["error"]["message"]


def test_result_id_pointing_at_no_row_is_result_not_found(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    job = data.job(status="completed", completed_at=datetime.now(UTC), result_id=str(uuid.uuid4()))

    assert_error(client, f"/admin/jobs/{job['job_id']}/results", auth, 404, "RESULT_NOT_FOUND")


# --- the older results layout (assessment_data / persona_profile) ------------------------

OLD_RESULTS_TABLE = """
CREATE SCHEMA IF NOT EXISTS archive;
CREATE TABLE archive.analysis_results (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    assessment_data jsonb,
    persona_profile jsonb,
    is_public boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


@pytest.fixture
def old_layout_url(server_url: str) -> Iterator[str]:
    """A database of this test's own whose results table has the older columns."""
    with scratch_database(server_url, f"admin_service_old_results_{os.getpid()}") as url:
        yield url


def test_results_from_the_older_layout(old_layout_url: str, admin: dict[str, Any], auth: dict[str, str]) -> None:
    settings = make_settings(old_layout_url)
    engine = make_engine(settings)
    try:
        result_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        with engine.begin() as conn:
            conn.exec_driver_sql(OLD_RESULTS_TABLE)
            create_fixture_tables(conn)  # keeps the older results table (CREATE ... IF NOT EXISTS)
            conn.execute(
                text("INSERT INTO auth.users (id, email, username, user_type) VALUES (:id, :email, :username, 'admin')"),
                {"id": admin["id"], "email": admin["email"], "username": admin["username"]},
            )
            conn.execute(
                text(
                    "INSERT INTO archive.analysis_results (id, user_id, assessment_data, persona_profile) "
                    "VALUES (:id, :user, CAST(:a AS jsonb), CAST(:p AS jsonb))"
                ),
                {
                    "id": result_id,
                    "user": user_id,
                    "a": json.dumps({"riasec": {"R": 3}}),
                    "p": json.dumps({"archetype": "The Explorer"}),
                },
            )
            conn.execute(
                text(
                    "INSERT INTO archive.analysis_jobs (job_id, user_id, status, result_id, completed_at) "
                    "VALUES ('legacy-1', :user, 'completed', :rid, now())"
                ),
                {"user": user_id, "rid": result_id},
            )
        client = create_app(settings, engine).test_client()

        payload = get_ok(client, "/admin/jobs/legacy-1/results", auth)

        assert payload["job"]["job_id"] == "legacy-1"
        assert set(payload["result"]) == {
            "id",
            "user_id",
            "assessment_data",
            "persona_profile",
            "is_public",
            "created_at",
            "updated_at",
        }
        assert payload["result"]["id"] == result_id
        assert payload["result"]["assessment_data"] == {"riasec": {"R": 3}}
        assert payload["result"]["persona_profile"] == {"archetype": "The Explorer"}
    finally:
        engine.dispose()
