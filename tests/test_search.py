"""`search` of GET /admin/jobs (and of the export, which shares its filters): what it matches
(row id, job_id prefix, user email/username, assessment name, error message), case, LIKE
metacharacters; and `status` with several values, repeated or comma-separated. The expected
rows are worked out in Python from the rows each test inserts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.factories import Data


def listed(client: FlaskClient, auth: dict[str, str], params: Any) -> list[str]:
    resp = client.get("/admin/jobs", query_string=params, headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()["data"]
    assert data["pagination"]["total"] == len(data["jobs"])
    return sorted(job["id"] for job in data["jobs"])


@pytest.fixture
def jobs(data: Data) -> list[dict[str, Any]]:
    dana = data.user(email="dana@lab.example", username="dana")
    specs = [
        ("alpha-1", "failed", "AI-Based IQ Test", "Timeout after 30012 ms on job 4f2a"),
        ("alpha-2", "failed", "Custom Assessment", "worker crashed: OOM"),
        ("beta-1", "completed", "AI-Driven Talent Mapping", None),
        ("beta-2", "cancelled", "AI-Based IQ Test", None),
        ("gamma-1", "queued", "Persona 100%", "retry 1 of 3: upstream_timeout"),
        ("gamma-2", "processing", "Custom Assessment", "quota 50% used"),
    ]
    rows = []
    for i, (job_id, status, name, error) in enumerate(specs):
        user = dana if i % 2 else None  # half of them without a user row
        job = data.job(user=user, job_id=job_id, status=status, assessment_name=name, error_message=error)
        rows.append({**job, "_email": user["email"] if user else None})
    return rows


Keep = Callable[[dict[str, Any]], bool]


def has(value: str | None, term: str) -> bool:
    return value is not None and term.lower() in value.lower()


@pytest.mark.parametrize(
    ("term", "keep"),
    [
        pytest.param("iq test", lambda j: has(j["assessment_name"], "iq test"), id="assessment name, partial, any case"),
        pytest.param("TIMEOUT", lambda j: has(j["error_message"], "timeout"), id="error message, partial, any case"),
        pytest.param("30012", lambda j: has(j["error_message"], "30012"), id="a number inside an error message"),
        pytest.param("alpha", lambda j: j["job_id"].startswith("alpha"), id="job_id prefix"),
        pytest.param("pha-1", lambda j: False, id="job_id is a prefix match only"),
        pytest.param("lab.EXAMPLE", lambda j: has(j["_email"], "lab.example"), id="user email, partial, any case"),
        pytest.param("%", lambda j: "%" in (j["assessment_name"] + (j["error_message"] or "")), id="percent matches itself"),
        pytest.param("_", lambda j: "_" in (j["error_message"] or ""), id="underscore matches itself"),
        pytest.param("nothing-like-this", lambda j: False, id="no match"),
    ],
)
def test_search_matches_what_the_readme_says(
    client: FlaskClient, auth: dict[str, str], jobs: list[dict[str, Any]], term: str, keep: Keep
) -> None:
    assert listed(client, auth, {"search": term}) == sorted(j["id"] for j in jobs if keep(j))


def test_search_by_row_id(client: FlaskClient, auth: dict[str, str], jobs: list[dict[str, Any]]) -> None:
    assert listed(client, auth, {"search": jobs[3]["id"]}) == [jobs[3]["id"]]


def test_search_combines_with_the_other_filters(client: FlaskClient, auth: dict[str, str], jobs: list[dict[str, Any]]) -> None:
    expected = sorted(j["id"] for j in jobs if j["status"] == "failed" and has(j["assessment_name"], "custom"))
    assert listed(client, auth, {"search": "custom", "status": "failed"}) == expected
    # With the assessment_name filter too (both read the assessment names: found by make fuzz).
    expected = sorted(j["id"] for j in jobs if has(j["assessment_name"], "iq") and has(j["error_message"], "timeout"))
    assert expected
    assert listed(client, auth, {"search": "timeout", "assessment_name": "IQ"}) == expected
    resp = client.get(
        "/admin/jobs/export", query_string={"search": "timeout", "assessment_name": "IQ", "format": "ndjson"}, headers=auth
    )
    assert resp.status_code == 200
    assert sorted(json.loads(line)["id"] for line in resp.get_data(as_text=True).splitlines()) == expected


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"status": "failed,cancelled"}, id="comma-separated"),
        pytest.param([("status", "failed"), ("status", "cancelled")], id="repeated"),
        pytest.param([("status", "failed,cancelled"), ("status", "FAILED")], id="both, repeats folded"),
    ],
)
def test_status_takes_several_values(client: FlaskClient, auth: dict[str, str], jobs: list[dict[str, Any]], params: Any) -> None:
    assert listed(client, auth, params) == sorted(j["id"] for j in jobs if j["status"] in ("failed", "cancelled"))


def test_a_single_status_still_works(client: FlaskClient, auth: dict[str, str], jobs: list[dict[str, Any]]) -> None:
    assert listed(client, auth, {"status": "queue"}) == sorted(j["id"] for j in jobs if j["status"] == "queued")


def test_assessment_names_are_the_distinct_names_of_the_jobs(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    for name in ("Zeta", "Alpha 100%", "Zeta", "Beta"):
        data.job(assessment_name=name)
    resp = client.get("/admin/jobs/assessment-names", headers=auth)
    assert resp.status_code == 200
    assert resp.get_json()["data"] == {"names": ["Alpha 100%", "Beta", "Zeta"]}
