"""GET /admin/users/<id>/jobs (the old admin dashboard's call): the user's jobs in the job
list's envelope and paging, 404 for an unknown user, 400s naming the field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.envelopes import assert_error
from tests.support.factories import Data

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def url(user_id: str) -> str:
    return f"/admin/users/{user_id}/jobs"


@pytest.fixture
def erin(data: Data) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    erin = data.user(email="erin@example.com", username="erin")
    other = data.user()
    mine = [
        data.job(user=erin, status=("completed", "failed", "queued")[i % 3], created_at=T0 + timedelta(minutes=i))
        for i in range(7)
    ]
    for i in range(3):
        data.job(user=other, created_at=T0 + timedelta(minutes=i))
    return erin, mine


def test_a_users_jobs_newest_first_in_the_list_envelope(
    client: FlaskClient, auth: dict[str, str], erin: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    user, mine = erin
    resp = client.get(url(user["id"]), query_string={"page": 2, "limit": 3}, headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is True and body["message"]
    data = body["data"]
    newest_first = [j["id"] for j in sorted(mine, key=lambda j: j["created_at"], reverse=True)]
    assert [j["id"] for j in data["jobs"]] == newest_first[3:6]
    assert all(j["user"] == {"id": user["id"], "email": "erin@example.com", "username": "erin"} for j in data["jobs"])
    pagination = data["pagination"]
    assert (pagination["total"], pagination["page"], pagination["limit"], pagination["totalPages"]) == (7, 2, 3, 3)
    assert pagination["hasNext"] and pagination["hasPrev"]
    assert data["user"] == {"id": user["id"], "email": "erin@example.com", "username": "erin"}


def test_status_filter_and_cursor_paging(
    client: FlaskClient, auth: dict[str, str], erin: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    user, mine = erin
    failed_or_queued = [j["id"] for j in sorted(mine, key=lambda j: j["created_at"], reverse=True) if j["status"] != "completed"]
    seen: list[str] = []
    params: dict[str, Any] = {"status": "failed,queued", "limit": 2}
    while True:
        data = client.get(url(user["id"]), query_string=params, headers=auth).get_json()["data"]
        seen += [j["id"] for j in data["jobs"]]
        if not data["pagination"]["nextCursor"]:
            break
        params = {"status": "failed,queued", "limit": 2, "cursor": data["pagination"]["nextCursor"]}
    assert seen == failed_or_queued


def test_a_user_without_jobs_has_an_empty_list(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    lonely = data.user()
    data_ = client.get(url(lonely["id"]), headers=auth).get_json()["data"]
    assert data_["jobs"] == [] and data_["pagination"]["total"] == 0


def test_jobs_of_a_deleted_user_stay_listed(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    ghost = str(uuid.uuid4())
    job = data.job(user_id=ghost)
    data_ = client.get(url(ghost), headers=auth).get_json()["data"]
    assert [j["id"] for j in data_["jobs"]] == [job["id"]]
    assert data_["user"] is None and data_["jobs"][0]["user"] is None


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid", "1"])
def test_an_unknown_user_is_a_404(client: FlaskClient, auth: dict[str, str], data: Data, user_id: str) -> None:
    data.job()
    assert_error(client.get(url(user_id), headers=auth), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"page": "x"}, "page"),
        ({"status": "done"}, "status"),
        ({"search": "a"}, "search"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: FlaskClient, auth: dict[str, str], erin: tuple[dict[str, Any], list[dict[str, Any]]], params: Any, field: str
) -> None:
    body = assert_error(client.get(url(erin[0]["id"]), query_string=params, headers=auth), 400, "VALIDATION_ERROR")
    assert field in [d["field"] for d in body["error"]["details"]]


def test_it_needs_an_admin_token(client: FlaskClient, data: Data) -> None:
    user = data.user()
    assert_error(client.get(url(user["id"])), 401, "UNAUTHORIZED")
