"""GET /admin/jobs against the real PostgreSQL: envelope, filters, sorting, offset and keyset
paging, count modes and validation. Every test states its own rows and works out the expected
answer in plain Python, independently of the service's SQL."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from admin_service import create_app
from tests.support.factories import JOB_COLUMNS, Data
from tests.support.plans import explained, statements_run
from tests.support.settings import make_settings

URL = "/admin/jobs"
DAY = datetime(2026, 3, 10, tzinfo=UTC)

Params = dict[str, Any] | Sequence[tuple[str, Any]]


# --- helpers ------------------------------------------------------------------------------


def get(client: FlaskClient, auth: dict[str, str], params: Params | None = None) -> Any:
    return client.get(URL, query_string=params or {}, headers=auth)


def ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is True
    return body["data"]


def ids(data: dict[str, Any]) -> list[str]:
    return [job["id"] for job in data["jobs"]]


def assert_invalid(resp: Any, field: str) -> dict[str, Any]:
    """A 400 VALIDATION_ERROR whose details name `field`."""
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    fields = [d["field"] for d in body["error"]["details"]]
    assert field in fields, body
    assert all(d["message"] for d in body["error"]["details"])
    return body


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def cursor_of(payload: list[Any]) -> str:
    """A cursor made by hand, in the format the service issues (url-safe base64 of JSON)."""
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def display_status(stored: str) -> str:
    return "queued" if stored == "queue" else stored


# The documented orders of the sorts the owner's (status, priority, created_at) index serves.
COMPOUND = {"priority": ("priority", "created_at"), "status": ("status", "priority", "created_at")}


def sort_key_of(job: dict[str, Any], sort_by: str) -> Any:
    if sort_by in COMPOUND:
        return tuple(display_status(job[c]) if c == "status" else job[c] for c in COMPOUND[sort_by])
    value = job[sort_by]
    return display_status(value) if sort_by == "status" else value


def expected_order(jobs: Iterable[dict[str, Any]], sort_by: str, order: str) -> list[str]:
    """ORDER BY sort_by <order> NULLS LAST, id <order> (priority: priority, created_at, id;
    status: status as shown, priority, created_at, id), computed in Python.
    PostgreSQL orders uuids bytewise, which is the order of their lower-case hex strings."""
    desc = order.upper() == "DESC"
    valued = [j for j in jobs if j[sort_by] is not None]
    nulls = [j for j in jobs if j[sort_by] is None]
    valued.sort(key=lambda j: (sort_key_of(j, sort_by), j["id"]), reverse=desc)
    nulls.sort(key=lambda j: j["id"], reverse=desc)
    return [j["id"] for j in valued + nulls]


def newest_first(jobs: Iterable[dict[str, Any]]) -> list[str]:
    return expected_order(jobs, "created_at", "DESC")


def walk_cursor(client: FlaskClient, auth: dict[str, str], params: dict[str, Any]) -> list[list[str]]:
    """Follow pagination.nextCursor from the first page to the last; the ids of each page."""
    pages: list[list[str]] = []
    data = ok(get(client, auth, params))
    assert data["pagination"]["page"] == 1
    assert data["pagination"]["hasPrev"] is False
    pages.append(ids(data))
    while data["pagination"]["nextCursor"]:
        assert data["pagination"]["hasNext"] is True
        data = ok(get(client, auth, {**params, "cursor": data["pagination"]["nextCursor"]}))
        assert data["pagination"]["page"] is None
        assert data["pagination"]["hasPrev"] is True
        pages.append(ids(data))
        assert len(pages) < 100, "cursor paging does not end"
    assert data["pagination"]["hasNext"] is False
    return pages


def offset_all(client: FlaskClient, auth: dict[str, str], params: dict[str, Any], limit: int) -> list[str]:
    found: list[str] = []
    page = 1
    while True:
        data = ok(get(client, auth, {**params, "limit": limit, "page": page}))
        found.extend(ids(data))
        if not data["pagination"]["hasNext"]:
            return found
        page += 1


# --- a small world of users and jobs ------------------------------------------------------


class World:
    """Three users with telling emails and usernames, jobs of a missing user, every status
    (including the legacy stored `queue`), assessment names with LIKE metacharacters, and
    created_at values on day boundaries."""

    def __init__(self, data: Data) -> None:
        self.alice = data.user(email="Alice.Smith@Example.com", username="alice_s")
        self.bob = data.user(email="bob@corp.test", username="BobTheBuilder")
        self.carol = data.user(email="carol@example.org", username="carol99")
        self.users = {u["id"]: u for u in (self.alice, self.bob, self.carol)}
        self.ghost_id = str(uuid.uuid4())
        specs: list[tuple[dict[str, Any] | None, str, str, datetime, str]] = [
            (self.alice, "batch-2026-A-001", "completed", DAY - timedelta(days=2), "AI-Driven Talent Mapping"),
            (self.alice, "batch-2026-A-002", "failed", DAY - timedelta(microseconds=1), "Big Five 100%"),
            (self.alice, "batch-2026-A-003", "queue", DAY, "big_five v2"),
            (self.alice, "batch-2026-B-001", "queued", DAY + timedelta(hours=12), "Bigfive"),
            (
                self.bob,
                "batch-2026-B-002",
                "processing",
                DAY + timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
                "Riasec",
            ),
            (self.bob, "batch-2026-B-003", "completed", DAY + timedelta(days=1), "Big Five 100%"),
            (self.bob, "other-77", "cancelled", DAY + timedelta(days=1, hours=6), "Path\\Test"),
            (self.carol, "other-78", "completed", DAY + timedelta(hours=8), "AI-Driven Talent Mapping"),
            (self.carol, "other-79", "queue", DAY - timedelta(days=1, hours=3), "Riasec"),
            (self.carol, "x-batch-2026-A", "failed", DAY + timedelta(days=2), "bigfive"),
            (None, "orphan-1", "completed", DAY + timedelta(hours=3), "Big Five 100%"),
            (None, "orphan-2", "queued", DAY - timedelta(hours=5), "Riasec"),
        ]
        self.jobs: list[dict[str, Any]] = []
        for user, job_id, status, created, name in specs:
            self.jobs.append(
                data.job(
                    user=user,
                    user_id=None if user else self.ghost_id,
                    job_id=job_id,
                    status=status,
                    created_at=created,
                    updated_at=created,
                    assessment_name=name,
                )
            )

    def user_of(self, job: dict[str, Any]) -> dict[str, Any] | None:
        return self.users.get(job["user_id"])

    def by_job_id(self, job_id: str) -> dict[str, Any]:
        return next(j for j in self.jobs if j["job_id"] == job_id)

    def expect(self, keep: Callable[[dict[str, Any], dict[str, Any] | None], bool]) -> list[str]:
        return newest_first(j for j in self.jobs if keep(j, self.user_of(j)))


def has(text: str | None, part: str) -> bool:
    return text is not None and part.lower() in text.lower()


# --- envelope and rows --------------------------------------------------------------------


def test_envelope_and_every_column_of_a_job_row(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    user = data.user(email="shape@example.com", username="shape_user")
    created = datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=UTC)
    job = data.job(
        user=user,
        status="completed",
        created_at=created,
        updated_at=created + timedelta(minutes=9),
        completed_at=created + timedelta(minutes=8),
        processing_started_at=created + timedelta(minutes=1),
        error_message="warning: partial",
        assessment_name="Riasec",
        priority=7,
        retry_count=2,
        max_retries=5,
    )
    data.result(job)

    resp = get(client, auth)
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"success", "message", "data", "timestamp"}
    assert body["success"] is True and isinstance(body["message"], str) and body["message"]
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
    assert set(body["data"]) == {"jobs", "pagination"}

    [row] = body["data"]["jobs"]
    assert set(row) == set(JOB_COLUMNS) | {"user"}
    assert row["id"] == job["id"]
    assert row["job_id"] == job["job_id"]
    assert row["user_id"] == user["id"]
    assert row["status"] == "completed"
    assert row["result_id"] == job["result_id"]
    assert row["error_message"] == "warning: partial"
    assert row["assessment_name"] == "Riasec"
    assert (row["priority"], row["retry_count"], row["max_retries"]) == (7, 2, 5)
    assert when(row["created_at"]) == created
    assert when(row["updated_at"]) == created + timedelta(minutes=9)
    assert when(row["completed_at"]) == created + timedelta(minutes=8)
    assert when(row["processing_started_at"]) == created + timedelta(minutes=1)
    assert row["user"] == {"id": user["id"], "email": "shape@example.com", "username": "shape_user"}

    assert body["data"]["pagination"] == {
        "total": 1,
        "countMode": "exact",
        "countedAt": None,
        "page": 1,
        "limit": 50,
        "totalPages": 1,
        "hasNext": False,
        "hasPrev": False,
        "nextCursor": None,
    }


def test_nullable_columns_come_back_as_null(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    job = data.job(user=data.user(), status="queued")
    [row] = ok(get(client, auth))["jobs"]
    assert row["id"] == job["id"]
    for column in ("result_id", "error_message", "completed_at", "processing_started_at"):
        assert row[column] is None, column


def test_user_is_null_when_the_user_row_is_missing(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    owner = data.user()
    with_user = data.job(user=owner, created_at=DAY)
    orphan = data.job(user_id=str(uuid.uuid4()), created_at=DAY - timedelta(hours=1))
    rows = {r["id"]: r for r in ok(get(client, auth))["jobs"]}
    assert rows[orphan["id"]]["user"] is None
    assert rows[orphan["id"]]["user_id"] == orphan["user_id"]
    assert rows[with_user["id"]]["user"] == {"id": owner["id"], "email": owner["email"], "username": owner["username"]}


def test_user_with_a_null_username(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    owner = data.user(email="nameless@example.com")
    data.execute("UPDATE auth.users SET username = NULL WHERE id = :id", id=owner["id"])
    data.job(user=owner)
    [row] = ok(get(client, auth))["jobs"]
    assert row["user"] == {"id": owner["id"], "email": "nameless@example.com", "username": None}


def test_stored_status_queue_is_emitted_as_queued(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    legacy = data.job(status="queue")
    modern = data.job(status="queued")
    done = data.job(status="completed")
    rows = {r["id"]: r["status"] for r in ok(get(client, auth))["jobs"]}
    assert rows == {legacy["id"]: "queued", modern["id"]: "queued", done["id"]: "completed"}


def test_requires_a_token(client: FlaskClient, data: Data) -> None:
    data.job()
    resp = client.get(URL)
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["success"] is False and body["error"]["code"] == "UNAUTHORIZED"
    assert "data" not in body


# --- filters ------------------------------------------------------------------------------


FILTER_CASES: list[tuple[str, Params, Callable[[World, dict[str, Any], dict[str, Any] | None], bool]]] = [
    ("status single", {"status": "failed"}, lambda w, j, u: j["status"] == "failed"),
    ("status list", {"status": "completed,failed"}, lambda w, j, u: j["status"] in ("completed", "failed")),
    (
        "status list with spaces and case",
        {"status": " Completed , CANCELLED"},
        lambda w, j, u: j["status"] in ("completed", "cancelled"),
    ),
    ("status queued includes stored queue", {"status": "queued"}, lambda w, j, u: j["status"] in ("queue", "queued")),
    ("status alias queue", {"status": "queue"}, lambda w, j, u: j["status"] in ("queue", "queued")),
    ("status alias in list", {"status": "queue,processing"}, lambda w, j, u: j["status"] in ("queue", "queued", "processing")),
    ("user_id", lambda w: {"user_id": w.bob["id"]}, lambda w, j, u: j["user_id"] == w.bob["id"]),
    ("user_id upper case", lambda w: {"user_id": w.carol["id"].upper()}, lambda w, j, u: j["user_id"] == w.carol["id"]),
    ("user_id of nobody", {"user_id": str(uuid.UUID(int=1))}, lambda w, j, u: False),
    ("user_email partial", {"user_email": "example"}, lambda w, j, u: u is not None and has(u["email"], "example")),
    (
        "user_email case-insensitive",
        {"user_email": "ALICE.smith"},
        lambda w, j, u: u is not None and has(u["email"], "alice.smith"),
    ),
    ("user_username partial", {"user_username": "builder"}, lambda w, j, u: u is not None and has(u["username"], "builder")),
    ("user_username case-insensitive", {"user_username": "CAROL"}, lambda w, j, u: u is not None and has(u["username"], "carol")),
    ("assessment_name partial", {"assessment_name": "five"}, lambda w, j, u: has(j["assessment_name"], "five")),
    ("assessment_name case-insensitive", {"assessment_name": "BIG FIVE"}, lambda w, j, u: has(j["assessment_name"], "big five")),
    ("search by row id", lambda w: {"search": w.by_job_id("other-78")["id"]}, lambda w, j, u: j["job_id"] == "other-78"),
    ("search by job_id exact", {"search": "batch-2026-B-002"}, lambda w, j, u: j["job_id"] == "batch-2026-B-002"),
    ("search by job_id prefix", {"search": "batch-2026-A"}, lambda w, j, u: j["job_id"].startswith("batch-2026-A")),
    ("search by email partial", {"search": "corp.TEST"}, lambda w, j, u: u is not None and has(u["email"], "corp.test")),
    ("search by username partial", {"search": "rol9"}, lambda w, j, u: u is not None and has(u["username"], "rol9")),
    ("search with no match", {"search": "zzz-nothing"}, lambda w, j, u: False),
    ("date_from date-time", {"date_from": "2026-03-10T12:00:00Z"}, lambda w, j, u: j["created_at"] >= DAY + timedelta(hours=12)),
    (
        "date_to date-time inclusive",
        {"date_to": "2026-03-10T12:00:00Z"},
        lambda w, j, u: j["created_at"] <= DAY + timedelta(hours=12),
    ),
    (
        "date-time with offset",
        {"date_from": "2026-03-10T14:00:00+02:00"},
        lambda w, j, u: j["created_at"] >= DAY + timedelta(hours=12),
    ),
    (
        "naive date-time means UTC",
        {"date_to": "2026-03-10T08:00:00"},
        lambda w, j, u: j["created_at"] <= DAY + timedelta(hours=8),
    ),
    ("date_from plain date", {"date_from": "2026-03-10"}, lambda w, j, u: j["created_at"] >= DAY),
    (
        "date_to plain date includes the whole day",
        {"date_to": "2026-03-10"},
        lambda w, j, u: j["created_at"] < DAY + timedelta(days=1),
    ),
    (
        "date_to basic-format date is a whole day too",
        {"date_to": "20260310"},
        lambda w, j, u: j["created_at"] < DAY + timedelta(days=1),
    ),
    (
        "one whole day",
        {"date_from": "2026-03-10", "date_to": "2026-03-10"},
        lambda w, j, u: DAY <= j["created_at"] < DAY + timedelta(days=1),
    ),
    (
        "date-time from, plain date to, same day",
        {"date_from": "2026-03-10T12:00:00Z", "date_to": "2026-03-10"},
        lambda w, j, u: DAY + timedelta(hours=12) <= j["created_at"] < DAY + timedelta(days=1),
    ),
    (
        "status and user_email and date range",
        {"status": "completed,failed", "user_email": "EXAMPLE", "date_from": "2026-03-09", "date_to": "2026-03-12"},
        lambda w, j, u: (
            j["status"] in ("completed", "failed")
            and u is not None
            and has(u["email"], "example")
            and DAY - timedelta(days=1) <= j["created_at"] < DAY + timedelta(days=3)
        ),
    ),
    (
        "assessment_name and user_username and status",
        {"assessment_name": "five", "user_username": "alice", "status": "queued"},
        lambda w, j, u: (
            has(j["assessment_name"], "five")
            and u is not None
            and has(u["username"], "alice")
            and j["status"] in ("queue", "queued")
        ),
    ),
    (
        "user_id and search",
        lambda w: {"user_id": w.alice["id"], "search": "batch-2026-B"},
        lambda w, j, u: j["user_id"] == w.alice["id"] and j["job_id"].startswith("batch-2026-B"),
    ),
    (
        "user_email and user_username must both hold",
        {"user_email": "example", "user_username": "builder"},
        lambda w, j, u: False,
    ),
]


@pytest.mark.parametrize(("params", "keep"), [pytest.param(p, k, id=name) for name, p, k in FILTER_CASES])
def test_filter(client: FlaskClient, data: Data, auth: dict[str, str], params: Any, keep: Any) -> None:
    world = World(data)
    query = params(world) if callable(params) else params
    expected = world.expect(lambda j, u: keep(world, j, u))
    result = ok(get(client, auth, {**query, "limit": 100}))
    assert ids(result) == expected
    assert result["pagination"]["total"] == len(expected)
    for row in result["jobs"]:
        assert row["status"] != "queue"


def test_without_filters_every_job_is_listed_newest_first(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    world = World(data)
    result = ok(get(client, auth))
    assert ids(result) == newest_first(world.jobs)
    assert result["pagination"]["total"] == len(world.jobs) == 12


def test_plain_date_to_is_the_whole_day_in_the_stats_time_zone(
    settings: Any, engine: Engine, data: Data, auth: dict[str, str]
) -> None:
    """With STATS_TIMEZONE=Asia/Tokyo (UTC+9), 2026-03-10 runs from 03-09T15:00Z to 03-10T15:00Z."""
    tokyo = create_app(make_settings(settings.database_url, env={"STATS_TIMEZONE": "Asia/Tokyo"}), engine).test_client()
    start = datetime(2026, 3, 9, 15, tzinfo=UTC)
    before = data.job(created_at=start - timedelta(microseconds=1))
    first = data.job(created_at=start)
    last = data.job(created_at=start + timedelta(days=1) - timedelta(microseconds=1))
    after = data.job(created_at=start + timedelta(days=1))
    day = ok(get(tokyo, auth, {"date_from": "2026-03-10", "date_to": "2026-03-10"}))
    assert ids(day) == [last["id"], first["id"]]
    assert ids(ok(get(tokyo, auth, {"date_to": "2026-03-09"}))) == [before["id"]]
    assert ids(ok(get(tokyo, auth, {"date_from": "2026-03-11"}))) == [after["id"]]
    # An explicit date-time is taken as given, whatever the stats time zone.
    assert ids(ok(get(tokyo, auth, {"date_from": "2026-03-10T15:00:00Z"}))) == [after["id"]]
    # The last instant of the Tokyo day is inside a plain date_to; the next one is after it.
    last_instant = {"date_from": "2026-03-10T14:59:59.999999Z", "date_to": "2026-03-10"}
    assert ids(ok(get(tokyo, auth, last_instant))) == [last["id"]]
    assert_invalid(get(tokyo, auth, {"date_from": "2026-03-10T15:00:00Z", "date_to": "2026-03-10"}), "date_from")


def test_a_plus_sign_sent_unencoded_in_a_date_time_still_means_an_offset(
    client: FlaskClient, data: Data, auth: dict[str, str]
) -> None:
    early = data.job(created_at=DAY + timedelta(hours=9))
    late = data.job(created_at=DAY + timedelta(hours=11))
    # A raw "+" in a query string arrives as a space.
    resp = client.get(f"{URL}?date_from=2026-03-10T12:00:00+02:00", headers=auth)
    assert ids(ok(resp)) == [late["id"]]
    assert early["id"] not in ids(ok(resp))


def test_extreme_dates_are_answered(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    job = data.job(created_at=DAY)
    for params in (
        {"date_to": "9999-12-31"},
        {"date_from": "0001-01-01"},
        {"date_from": "0001-01-01", "date_to": "9999-12-31"},
        {"date_to": "9999-12-31T23:59:59-14:00"},
    ):
        assert ids(ok(get(client, auth, params))) == [job["id"]], params
    assert ids(ok(get(client, auth, {"date_from": "9999-12-31"}))) == []
    assert ids(ok(get(client, auth, {"date_to": "0001-01-01"}))) == []


# --- LIKE and SQL metacharacters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        pytest.param({"assessment_name": "%"}, lambda j, u: "%" in j["assessment_name"], id="assessment_name percent"),
        pytest.param({"assessment_name": "_"}, lambda j, u: "_" in j["assessment_name"], id="assessment_name underscore"),
        pytest.param(
            {"assessment_name": "big_five"}, lambda j, u: has(j["assessment_name"], "big_five"), id="underscore inside a word"
        ),
        pytest.param({"assessment_name": "0%"}, lambda j, u: "0%" in j["assessment_name"], id="percent at the end"),
        pytest.param({"assessment_name": "\\"}, lambda j, u: "\\" in j["assessment_name"], id="backslash"),
        pytest.param({"assessment_name": "h\\T"}, lambda j, u: has(j["assessment_name"], "h\\t"), id="backslash inside"),
        pytest.param({"user_username": "_"}, lambda j, u: u is not None and "_" in u["username"], id="user_username underscore"),
        pytest.param({"user_email": "%"}, lambda j, u: False, id="user_email percent"),
        pytest.param(
            {"search": "%"}, lambda j, u: "%" in j["assessment_name"] or "%" in (j["error_message"] or ""), id="search percent"
        ),
        pytest.param(
            {"search": "_"},
            lambda j, u: (
                (u is not None and "_" in u["username"]) or "_" in j["assessment_name"] or "_" in (j["error_message"] or "")
            ),
            id="search underscore",
        ),
        pytest.param({"search": "batch-2026-_-001"}, lambda j, u: False, id="search underscore in a job_id prefix"),
    ],
)
def test_like_metacharacters_match_only_themselves(
    client: FlaskClient, data: Data, auth: dict[str, str], params: Params, keep: Any
) -> None:
    world = World(data)
    expected = world.expect(keep)
    result = ok(get(client, auth, {**dict(params), "limit": 100}))
    assert ids(result) == expected
    assert result["pagination"]["total"] == len(expected)


@pytest.mark.parametrize("field", ["assessment_name", "user_email", "user_username", "search"])
@pytest.mark.parametrize(
    "attack",
    [
        "' OR 1=1 --",
        "'; DROP TABLE archive.analysis_jobs; --",
        '" OR ""="',
        "1) OR (1=1",
        "x' UNION SELECT * FROM auth.users --",
        ":name",
    ],
)
def test_sql_metacharacters_are_harmless(client: FlaskClient, data: Data, auth: dict[str, str], field: str, attack: str) -> None:
    world = World(data)
    for count in ("exact", "estimated"):
        result = ok(get(client, auth, {field: attack, "count": count}))
        assert result["jobs"] == []
        if count == "exact":
            assert result["pagination"]["total"] == 0
    assert ok(get(client, auth))["pagination"]["total"] == len(world.jobs)


def test_a_quote_in_a_value_matches_literally(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    irish = data.user(email="o'brien@example.com", username="o'brien")
    mine = data.job(user=irish, assessment_name="Owner's test")
    data.job(user=data.user(), assessment_name="Owners test")
    for params in ({"user_email": "o'b"}, {"search": "O'BRIEN"}, {"assessment_name": "r's"}):
        assert ids(ok(get(client, auth, params))) == [mine["id"]], params


# --- sorting ------------------------------------------------------------------------------


def fixed_id(n: int, count: int, step: int) -> str:
    """Row ids in a scrambled but fixed order (step is prime to count), so that the ids of
    `queue` and `queued` rows interleave on every run."""
    return str(uuid.UUID(int=(n * step) % count + 1))


def sortable_jobs(data: Data) -> list[dict[str, Any]]:
    """Jobs whose sort columns tie often: equal priorities, equal and NULL completed_at,
    equal updated_at, and both stored spellings of queued (ids 1, 7, 13 stored `queue`,
    6, 12, 18 stored `queued`)."""
    statuses = ["queue", "queued", "processing", "completed", "failed", "cancelled"]
    jobs = []
    for n in range(18):
        created = DAY + timedelta(minutes=7 * n)
        status = statuses[n % len(statuses)]
        jobs.append(
            data.job(
                id=fixed_id(n, 18, 11),
                status=status,
                created_at=created if n % 5 else DAY,  # a few equal created_at
                updated_at=DAY + timedelta(hours=n % 4),
                completed_at=None if n % 3 == 0 else DAY + timedelta(days=1, hours=n % 2),
                priority=n % 3,
            )
        )
    return jobs


SORTS = [(s, o) for s in ("created_at", "updated_at", "completed_at", "status", "priority") for o in ("ASC", "DESC")]


@pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
def test_sort_orders_rows_with_ties_broken_by_id_and_nulls_last(
    client: FlaskClient, data: Data, auth: dict[str, str], sort_by: str, sort_order: str
) -> None:
    jobs = sortable_jobs(data)
    result = ok(get(client, auth, {"sort_by": sort_by, "sort_order": sort_order, "limit": 100}))
    assert ids(result) == expected_order(jobs, sort_by, sort_order)
    if sort_by == "completed_at":
        tail = [row["completed_at"] for row in result["jobs"][-6:]]
        assert tail == [None] * 6


@pytest.mark.parametrize("spelling", ["asc", "Asc", "aSC", "desc", "Desc", "DESC"])
def test_sort_order_in_any_case(client: FlaskClient, data: Data, auth: dict[str, str], spelling: str) -> None:
    jobs = sortable_jobs(data)
    result = ok(get(client, auth, {"sort_by": "priority", "sort_order": spelling, "limit": 100}))
    assert ids(result) == expected_order(jobs, "priority", spelling.upper())


def test_status_sort_keeps_both_spellings_of_queued_together_in_priority_order(
    client: FlaskClient, data: Data, auth: dict[str, str]
) -> None:
    sortable_jobs(data)
    for order in ("ASC", "DESC"):
        rows = ok(get(client, auth, {"sort_by": "status", "sort_order": order, "limit": 100}))["jobs"]
        queued = [(r["priority"], when(r["created_at"]), r["id"]) for r in rows if r["status"] == "queued"]
        assert queued == sorted(queued, reverse=order == "DESC")
        assert sorted(int(uuid.UUID(q[2])) for q in queued) == [1, 6, 7, 12, 13, 18]
        start = [r["status"] for r in rows].index("queued")
        assert all(r["status"] == "queued" for r in rows[start : start + 6])


def test_default_sort_is_created_at_descending(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = sortable_jobs(data)
    assert ids(ok(get(client, auth, {"limit": 100}))) == expected_order(jobs, "created_at", "DESC")


# --- offset paging ------------------------------------------------------------------------


def test_offset_paging(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = [data.job(created_at=DAY + timedelta(minutes=n)) for n in range(7)]
    order = newest_first(jobs)
    expected_pages = [order[0:3], order[3:6], order[6:7], []]
    for page, expected in enumerate(expected_pages, start=1):
        result = ok(get(client, auth, {"page": page, "limit": 3}))
        assert ids(result) == expected, page
        p = result["pagination"]
        assert (p["total"], p["page"], p["limit"], p["totalPages"]) == (7, page, 3, 3)
        assert p["hasPrev"] is (page > 1)
        assert p["hasNext"] is (page < 3)
        assert (p["nextCursor"] is None) is (page >= 3)


def test_page_of_exactly_limit_rows_has_no_next(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    for n in range(4):
        data.job(created_at=DAY + timedelta(minutes=n))
    p = ok(get(client, auth, {"limit": 4}))["pagination"]
    assert (p["total"], p["totalPages"], p["hasNext"], p["nextCursor"]) == (4, 1, False, None)
    p = ok(get(client, auth, {"limit": 2, "page": 2}))["pagination"]
    assert (p["totalPages"], p["hasNext"], p["hasPrev"]) == (2, False, True)


def test_empty_table(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    result = ok(get(client, auth))
    assert result["jobs"] == []
    p = result["pagination"]
    assert (p["total"], p["totalPages"], p["hasNext"], p["hasPrev"], p["nextCursor"]) == (0, 0, False, False, None)


def test_paging_applies_to_the_filtered_rows(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    failed = [data.job(status="failed", created_at=DAY + timedelta(minutes=n)) for n in range(5)]
    for n in range(5):
        data.job(status="completed", created_at=DAY + timedelta(minutes=n, seconds=30))
    result = ok(get(client, auth, {"status": "failed", "limit": 2, "page": 3}))
    assert ids(result) == newest_first(failed)[4:]
    assert (result["pagination"]["total"], result["pagination"]["totalPages"]) == (5, 3)


# --- keyset paging ------------------------------------------------------------------------


def keyset_jobs(data: Data) -> list[dict[str, Any]]:
    """23 jobs: priorities 0-2 (many ties), a third without completed_at, repeated
    completed_at and created_at values, both spellings of queued."""
    statuses = ["queue", "completed", "failed", "queued", "processing"]
    jobs = []
    for n in range(23):
        jobs.append(
            data.job(
                id=fixed_id(n, 23, 7),
                status=statuses[n % 5],
                created_at=DAY + timedelta(minutes=n // 2),  # pairs share created_at
                updated_at=DAY + timedelta(seconds=n * 13 % 7),
                completed_at=None if n % 3 == 0 else DAY + timedelta(hours=n % 4, microseconds=n % 2),
                priority=n % 3,
            )
        )
    return jobs


@pytest.mark.parametrize(
    ("sort_by", "sort_order"),
    [
        ("created_at", "DESC"),
        ("created_at", "ASC"),
        ("updated_at", "DESC"),
        ("completed_at", "ASC"),
        ("completed_at", "DESC"),
        ("priority", "ASC"),
        ("priority", "DESC"),
        ("status", "ASC"),
        ("status", "DESC"),
    ],
)
@pytest.mark.parametrize("limit", [1, 4, 5])
def test_following_next_cursor_yields_every_row_once_in_offset_order(
    client: FlaskClient, data: Data, auth: dict[str, str], sort_by: str, sort_order: str, limit: int
) -> None:
    jobs = keyset_jobs(data)
    expected = expected_order(jobs, sort_by, sort_order)
    params = {"sort_by": sort_by, "sort_order": sort_order, "limit": limit}
    pages = walk_cursor(client, auth, params)
    walked = [i for page in pages for i in page]
    assert walked == expected
    assert len(set(walked)) == len(jobs)
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit
    assert offset_all(client, auth, {"sort_by": sort_by, "sort_order": sort_order}, limit) == expected


def test_cursor_paging_with_a_filter_and_lower_case_order(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = keyset_jobs(data)
    queued = [j for j in jobs if j["status"] in ("queue", "queued")]
    params = {"status": "queued", "sort_by": "completed_at", "sort_order": "asc", "limit": 3}
    walked = [i for page in walk_cursor(client, auth, params) for i in page]
    assert walked == expected_order(queued, "completed_at", "ASC")


def test_cursor_pages_keep_counting(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = keyset_jobs(data)
    first = ok(get(client, auth, {"limit": 10}))
    second = ok(get(client, auth, {"limit": 10, "cursor": first["pagination"]["nextCursor"]}))
    p = second["pagination"]
    assert (p["total"], p["totalPages"], p["page"], p["limit"], p["hasPrev"], p["hasNext"]) == (
        len(jobs),
        3,
        None,
        10,
        True,
        True,
    )
    assert ids(second) == newest_first(jobs)[10:20]


def test_a_cursor_is_stable_when_newer_rows_arrive(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = [data.job(created_at=DAY + timedelta(minutes=n)) for n in range(6)]
    first = ok(get(client, auth, {"limit": 3}))
    data.job(created_at=DAY + timedelta(days=1))  # lands on page one, not between pages
    second = ok(get(client, auth, {"limit": 3, "cursor": first["pagination"]["nextCursor"]}))
    assert ids(second) == newest_first(jobs)[3:]


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ({"sort_by": "created_at"}, {"sort_by": "priority"}),
        ({"sort_by": "priority", "sort_order": "ASC"}, {"sort_by": "priority", "sort_order": "DESC"}),
        ({"sort_by": "completed_at", "sort_order": "DESC"}, {"sort_by": "updated_at", "sort_order": "DESC"}),
        ({"sort_by": "status", "sort_order": "asc"}, {}),
    ],
)
def test_a_cursor_from_another_sort_is_refused(
    client: FlaskClient, data: Data, auth: dict[str, str], issued_for: dict[str, str], used_with: dict[str, str]
) -> None:
    keyset_jobs(data)
    cursor = ok(get(client, auth, {**issued_for, "limit": 2}))["pagination"]["nextCursor"]
    assert cursor
    body = assert_invalid(get(client, auth, {**used_with, "limit": 2, "cursor": cursor}), "cursor")
    assert "sort" in body["error"]["message"].lower() or any("sort" in d["message"] for d in body["error"]["details"])


GOOD_ID = str(uuid.UUID(int=7))


@pytest.mark.parametrize(
    ("cursor", "sort_by"),
    [
        pytest.param("garbage", "created_at", id="garbage"),
        pytest.param("!!!!", "created_at", id="not base64"),
        pytest.param("é" * 10, "created_at", id="not ascii"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(), "created_at", id="not utf-8"),
        pytest.param(base64.urlsafe_b64encode(b"{not json").decode(), "created_at", id="not json"),
        pytest.param(cursor_of(["created_at", "DESC", "2026-03-10T00:00:00+00:00"]), "created_at", id="three items"),
        pytest.param(cursor_of({"a": 1, "b": 2, "c": 3, "d": 4}), "created_at", id="an object"),
        pytest.param(cursor_of(5), "created_at", id="a number"),
        pytest.param(cursor_of(["created_at", "DESC", "2026-03-10T00:00:00+00:00", "not-a-uuid"]), "created_at", id="bad id"),
        pytest.param(cursor_of(["created_at", "DESC", "2026-03-10T00:00:00+00:00", 12345]), "created_at", id="numeric id"),
        pytest.param(cursor_of(["created_at", "DESC", "2026-03-10T00:00:00+00:00", None]), "created_at", id="null id"),
        pytest.param(cursor_of(["created_at", "DESC", "yesterday", GOOD_ID]), "created_at", id="bad date value"),
        pytest.param(cursor_of(["created_at", "DESC", 12345, GOOD_ID]), "created_at", id="numeric date value"),
        pytest.param(cursor_of(["priority", "DESC", "high", GOOD_ID]), "priority", id="text priority"),
        pytest.param(cursor_of(["priority", "DESC", True, GOOD_ID]), "priority", id="boolean priority"),
        pytest.param(cursor_of(["priority", "DESC", 1.5, GOOD_ID]), "priority", id="fractional priority"),
        pytest.param(cursor_of(["priority", "DESC", [1], GOOD_ID]), "priority", id="list priority"),
        pytest.param(cursor_of(["status", "DESC", 3, GOOD_ID]), "status", id="numeric status"),
        pytest.param(cursor_of(["status", "DESC", "que\u0000ued", GOOD_ID]), "status", id="NUL in status"),
        pytest.param(cursor_of(["status", "DESC", {"x": 1}, GOOD_ID]), "status", id="object status"),
        pytest.param(cursor_of([["created_at"], "DESC", None, GOOD_ID]), "created_at", id="list sort_by"),
        pytest.param("x" * 513, "created_at", id="too long"),
    ],
)
def test_a_garbage_cursor_is_a_400(client: FlaskClient, data: Data, auth: dict[str, str], cursor: str, sort_by: str) -> None:
    data.job()
    assert_invalid(get(client, auth, {"cursor": cursor, "sort_by": sort_by}), "cursor")


def test_an_empty_cursor_is_a_400(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    assert_invalid(get(client, auth, {"cursor": ""}), "cursor")


def test_a_hand_made_cursor_in_the_issued_format_works(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    """The cursor is only (sort, order, value, id): one built from a row resumes right after it."""
    jobs = [data.job(priority=n % 2, created_at=DAY + timedelta(minutes=n)) for n in range(6)]
    order = expected_order(jobs, "priority", "ASC")
    pivot = next(j for j in jobs if j["id"] == order[2])
    position = [str(pivot["priority"]), pivot["created_at"].isoformat()]
    cursor = cursor_of(["priority", "ASC", position, pivot["id"]])
    assert ids(ok(get(client, auth, {"sort_by": "priority", "sort_order": "ASC", "cursor": cursor}))) == order[3:]


@pytest.mark.parametrize(("sort_by", "value"), [("priority", 1), ("status", "failed"), ("priority", "1"), ("status", "queued")])
def test_a_cursor_of_the_single_column_format_is_a_clear_400(
    client: FlaskClient, data: Data, auth: dict[str, str], sort_by: str, value: Any
) -> None:
    """Cursors issued when these sorts were `column, id` ask the client to start again."""
    data.job()
    body = assert_invalid(
        get(client, auth, {"sort_by": sort_by, "cursor": cursor_of([sort_by, "DESC", value, GOOD_ID])}), "cursor"
    )
    assert "first page" in json.dumps(body)


@pytest.mark.parametrize(
    ("sort_by", "value"),
    [
        ("priority", ["1"]),
        ("priority", ["x", "2026-03-10T00:00:00+00:00"]),
        ("priority", ["99999999999", "2026-03-10T00:00:00+00:00"]),
        ("priority", [1, "2026-03-10T00:00:00+00:00"]),
        ("priority", ["1", "yesterday"]),
        ("status", ["failed", "1"]),
        ("status", ["fa\u0000iled", "1", "2026-03-10T00:00:00+00:00"]),
        ("status", ["failed", "1", "2026-03-10T00:00:00+00:00", "x"]),
    ],
)
def test_a_compound_cursor_with_a_bad_part_is_a_400(
    client: FlaskClient, data: Data, auth: dict[str, str], sort_by: str, value: Any
) -> None:
    data.job()
    assert_invalid(get(client, auth, {"sort_by": sort_by, "cursor": cursor_of([sort_by, "ASC", value, GOOD_ID])}), "cursor")


def test_page_after_the_first_together_with_a_cursor_is_a_400(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    keyset_jobs(data)
    cursor = ok(get(client, auth, {"limit": 5}))["pagination"]["nextCursor"]
    assert_invalid(get(client, auth, {"limit": 5, "cursor": cursor, "page": 2}), "cursor")


def test_default_list_and_its_cursor_pages_walk_the_created_at_index(
    client: FlaskClient, data: Data, auth: dict[str, str], engine: Engine
) -> None:
    """Deep paging at constant cost: neither the first page nor a cursor page of the default
    sort reads the whole jobs table (the NULLS LAST / OR-keyset form made both a full scan)."""
    data.execute(
        "INSERT INTO archive.analysis_jobs (job_id, user_id, created_at) "
        "SELECT 'bulk-' || n, gen_random_uuid(), now() - n * interval '1 second' FROM generate_series(1, 20000) AS n"
    )
    data.execute("ANALYZE archive.analysis_jobs")
    with statements_run(engine, lambda statement: "LIMIT" in statement and "analysis_jobs" in statement) as seen:
        first = ok(get(client, auth, {"count": "none"}))
        ok(get(client, auth, {"count": "none", "cursor": first["pagination"]["nextCursor"]}))
    assert len(seen) == 2
    for (statement, _), nodes in zip(seen, explained(engine, seen), strict=True):
        scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "analysis_jobs"]
        assert scans and all("Index" in scan for scan in scans), (scans, statement)


# --- count modes --------------------------------------------------------------------------


def test_count_exact_is_the_default(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    for n in range(5):
        data.job(status="failed" if n % 2 else "completed")
    for params, total in (({}, 5), ({"count": "exact"}, 5), ({"status": "failed", "count": "exact"}, 2)):
        p = ok(get(client, auth, {**params, "limit": 2}))["pagination"]
        assert (p["total"], p["countMode"], p["totalPages"]) == (total, "exact", math.ceil(total / 2)), params


def test_count_estimated(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    world = World(data)
    data.execute("ANALYZE archive.analysis_jobs")
    data.execute("ANALYZE auth.users")
    result = ok(get(client, auth, {"count": "estimated", "limit": 5}))
    p = result["pagination"]
    assert p["countMode"] == "estimated"
    assert isinstance(p["total"], int) and not isinstance(p["total"], bool)
    # Freshly analysed and unfiltered, the planner knows the table's size.
    assert p["total"] == len(world.jobs)
    assert p["totalPages"] == math.ceil(p["total"] / 5)
    assert ids(result) == newest_first(world.jobs)[:5]
    assert p["hasNext"] is True


@pytest.mark.parametrize(
    "params",
    [
        {"status": "queued,failed"},
        {"user_email": "example", "user_username": "a"},
        {"assessment_name": "100%"},
        {"search": "batch-2026-A"},
        {"date_from": "2026-03-10", "date_to": "2026-03-11T06:30:00+02:00"},
        {"search": "x:y"},
        {"search": "a :y"},
    ],
    ids=["status", "user", "percent", "search", "dates", "colon", "bind-like"],
)
def test_count_estimated_with_filters_is_a_number(
    client: FlaskClient, data: Data, auth: dict[str, str], params: dict[str, str]
) -> None:
    World(data)
    data.execute("ANALYZE archive.analysis_jobs")
    with_id = {**params, "user_id": str(uuid.uuid4())} if params.get("search") == "batch-2026-A" else params
    p = ok(get(client, auth, {**with_id, "count": "estimated"}))["pagination"]
    assert p["countMode"] == "estimated"
    assert isinstance(p["total"], int) and p["total"] >= 0


def test_count_none(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = [data.job(created_at=DAY + timedelta(minutes=n)) for n in range(3)]
    result = ok(get(client, auth, {"count": "none", "limit": 2}))
    p = result["pagination"]
    assert (p["total"], p["totalPages"], p["countMode"]) == (None, None, "none")
    assert p["hasNext"] is True and p["nextCursor"]
    assert ids(result) == newest_first(jobs)[:2]
    last = ok(get(client, auth, {"count": "none", "limit": 2, "page": 2}))["pagination"]
    assert (last["total"], last["hasNext"], last["hasPrev"]) == (None, False, True)


# --- validation ---------------------------------------------------------------------------


INVALID: list[tuple[str, Params, str]] = [
    ("user_id not a uuid", {"user_id": "not-a-uuid"}, "user_id"),
    ("user_id a number", {"user_id": "42"}, "user_id"),
    ("date_from not a date", {"date_from": "yesterday"}, "date_from"),
    ("date_from day 30 of February", {"date_from": "2026-02-30"}, "date_from"),
    ("date_to month 13", {"date_to": "2026-13-01"}, "date_to"),
    ("date_to hour 25", {"date_to": "2026-03-10T25:00:00Z"}, "date_to"),
    ("date_to far too long", {"date_to": "2026-03-10T10:00:00" + "0" * 40}, "date_to"),
    ("date_to empty", {"date_to": ""}, "date_to"),
    ("date_from after date_to", {"date_from": "2026-03-11", "date_to": "2026-03-10"}, "date_from"),
    ("date-time from after date-time to", {"date_from": "2026-03-10T12:00:01Z", "date_to": "2026-03-10T12:00:00Z"}, "date_from"),
    ("date-time from after the plain date to", {"date_from": "2026-03-11T00:00:00Z", "date_to": "2026-03-10"}, "date_from"),
    ("limit 0", {"limit": "0"}, "limit"),
    ("limit 101", {"limit": "101"}, "limit"),
    ("limit negative", {"limit": "-5"}, "limit"),
    ("limit not a number", {"limit": "ten"}, "limit"),
    ("limit fractional", {"limit": "2.5"}, "limit"),
    ("page 0", {"page": "0"}, "page"),
    ("page negative", {"page": "-1"}, "page"),
    ("page not a number", {"page": "first"}, "page"),
    ("page absurd", {"page": "99999999999999999999999"}, "page"),
    ("sort_by unknown", {"sort_by": "email"}, "sort_by"),
    ("sort_by injection", {"sort_by": "created_at; DROP TABLE archive.analysis_jobs"}, "sort_by"),
    ("sort_by id", {"sort_by": "id"}, "sort_by"),
    ("sort_order bad", {"sort_order": "up"}, "sort_order"),
    ("sort_order empty", {"sort_order": ""}, "sort_order"),
    ("status unknown", {"status": "done"}, "status"),
    ("status unknown in a list", {"status": "queued,bogus"}, "status"),
    ("status empty", {"status": ""}, "status"),
    ("status empty item", {"status": "queued,,failed"}, "status"),
    ("count unknown", {"count": "all"}, "count"),
    ("unknown parameter", {"foo": "bar"}, "foo"),
    ("unknown parameter beside good ones", {"status": "failed", "userId": "x"}, "userId"),
    ("repeated limit", [("limit", "10"), ("limit", "20")], "limit"),
    ("repeated status with a bad one", [("status", "failed"), ("status", "done")], "status"),
    ("repeated search", [("search", "a"), ("search", "a")], "search"),
    ("user_email 256 chars", {"user_email": "e" * 256}, "user_email"),
    ("user_username 256 chars", {"user_username": "u" * 256}, "user_username"),
    ("assessment_name 256 chars", {"assessment_name": "a" * 256}, "assessment_name"),
    ("search 256 chars", {"search": "s" * 256}, "search"),
    ("search empty", {"search": ""}, "search"),
    ("search with a NUL", {"search": "job\x00"}, "search"),
    ("user_email with a NUL", {"user_email": "\x00"}, "user_email"),
    ("assessment_name with a NUL", {"assessment_name": "a\x00b"}, "assessment_name"),
]


@pytest.mark.parametrize(("params", "field"), [pytest.param(p, f, id=name) for name, p, f in INVALID])
def test_invalid_parameter_is_a_400_naming_it(
    client: FlaskClient, data: Data, auth: dict[str, str], params: Params, field: str
) -> None:
    data.job()
    body = assert_invalid(get(client, auth, params), field)
    assert "Traceback" not in json.dumps(body)


def test_every_problem_is_reported_at_once(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    body = assert_invalid(get(client, auth, {"limit": "0", "page": "0", "sort_by": "name", "status": "done"}), "limit")
    fields = {d["field"] for d in body["error"]["details"]}
    assert {"limit", "page", "sort_by", "status"} <= fields


def test_longest_accepted_text_is_255(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    name = "n" * 255
    job = data.job(assessment_name=name)
    data.job(assessment_name="other")
    assert ids(ok(get(client, auth, {"assessment_name": name}))) == [job["id"]]
    for field in ("user_email", "user_username", "search"):
        assert ok(get(client, auth, {field: "x" * 255}))["jobs"] == []


def test_edge_limits_are_accepted(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    jobs = [data.job(created_at=DAY + timedelta(minutes=n)) for n in range(3)]
    assert ids(ok(get(client, auth, {"limit": 1}))) == newest_first(jobs)[:1]
    assert ids(ok(get(client, auth, {"limit": 100}))) == newest_first(jobs)
    assert ok(get(client, auth, {"page": 1_000_000}))["jobs"] == []


# --- regressions of the service this replaces ---------------------------------------------


def test_regression_old_service_did_not_cap_limit(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    data.execute(
        "INSERT INTO archive.analysis_jobs (job_id, user_id, created_at) "
        "SELECT 'bulk-' || n, gen_random_uuid(), now() - n * interval '1 second' FROM generate_series(1, 120) AS n"
    )
    result = ok(get(client, auth, {"limit": 100}))
    assert len(result["jobs"]) == 100
    assert result["pagination"]["hasNext"] is True and result["pagination"]["total"] == 120
    assert_invalid(get(client, auth, {"limit": 1000}), "limit")
    assert_invalid(get(client, auth, {"limit": 101}), "limit")


@pytest.mark.parametrize(
    "params",
    [{"date_from": "not-a-date"}, {"date_to": "2026-13-45"}, {"date_from": "31/12/2026"}, {"date_to": "2026-03-10T99:99"}],
)
def test_regression_old_service_answered_500_on_a_bad_date(
    client: FlaskClient, data: Data, auth: dict[str, str], params: dict[str, str]
) -> None:
    data.job()
    resp = get(client, auth, params)
    assert resp.status_code != 500
    assert_invalid(resp, next(iter(params)))


def test_regression_old_service_did_not_escape_like_wildcards(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    percent = data.job(assessment_name="Discount 50% off", created_at=DAY)
    underscore = data.job(assessment_name="snake_case", created_at=DAY - timedelta(minutes=1))
    data.job(assessment_name="Plain name", created_at=DAY - timedelta(minutes=2))
    data.job(assessment_name="snakeXcase", created_at=DAY - timedelta(minutes=3))
    assert ids(ok(get(client, auth, {"assessment_name": "%"}))) == [percent["id"]]
    assert ids(ok(get(client, auth, {"assessment_name": "_"}))) == [underscore["id"]]
    assert ids(ok(get(client, auth, {"assessment_name": "snake_case"}))) == [underscore["id"]]
    assert ok(get(client, auth, {"assessment_name": "%%"}))["jobs"] == []


def test_regression_old_service_counted_queued_as_zero(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    legacy = [data.job(status="queue", created_at=DAY + timedelta(minutes=n)) for n in range(3)]
    modern = [data.job(status="queued", created_at=DAY + timedelta(minutes=10))]
    data.job(status="processing")
    data.job(status="completed")
    for status in ("queued", "queue", "QUEUED"):
        result = ok(get(client, auth, {"status": status}))
        assert result["pagination"]["total"] == 4, status
        assert ids(result) == newest_first(legacy + modern)
        assert {row["status"] for row in result["jobs"]} == {"queued"}
