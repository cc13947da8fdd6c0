"""Input the database or the JSON encoder cannot take, over REST (issue 18, defects 1 and 2).

Every value that reaches a statement goes through one parser per kind (instants:
clock.parse_instant; text: schemas.text_problem), so what PostgreSQL would refuse is a 400
naming the field; a DataError that gets past them anyway is a 400 too, never a 500, and the
statement's bound values are not logged. Answers are always encodable: text that is not
(a lone surrogate) is never echoed as it is.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from admin_service.errors import ApiError
from admin_service.services import services
from tests.support.envelopes import assert_error
from tests.support.factories import Data

URL = "/admin/jobs"
ANCHOR = datetime(2024, 1, 1, tzinfo=UTC)


def cursor_of(payload: list[Any]) -> str:
    """A cursor made by hand in the service's format (url-safe base64 of JSON). json.dumps
    writes a lone surrogate as the escape \\ud800, which json.loads turns back into one."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def invalid(resp: Any, field: str) -> dict[str, Any]:
    body = assert_error(resp, 400, "VALIDATION_ERROR")
    assert field in [d["field"] for d in body["error"]["details"]], body
    return body


@pytest.fixture
def around_anchor(data: Data, admin: dict[str, Any]) -> dict[str, str]:
    """Jobs 12 h before and 12 h after 2024-01-01T00:00Z, by name."""
    before = data.job(user=admin, created_at=ANCHOR - timedelta(hours=12))
    after = data.job(user=admin, created_at=ANCHOR + timedelta(hours=12))
    return {"before": before["id"], "after": after["id"]}


def listed(client: FlaskClient, auth: dict[str, str], **params: Any) -> list[str]:
    resp = client.get(URL, query_string=params, headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [job["id"] for job in resp.get_json()["data"]["jobs"]]


# --- instants: date_from, date_to, cursors -------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "instant"),
    [
        ("+16:00", ANCHOR - timedelta(hours=16)),  # beyond PostgreSQL's +-15:59
        ("-23:59", ANCHOR + timedelta(hours=23, minutes=59)),
        ("+15:59", ANCHOR - timedelta(hours=15, minutes=59)),
    ],
)
def test_any_offset_the_format_allows_is_read_as_its_instant(
    client: FlaskClient, auth: dict[str, str], around_anchor: dict[str, str], offset: str, instant: datetime
) -> None:
    """RFC 3339 allows offsets up to +-23:59 and PostgreSQL refuses beyond +-15:59: the service
    sends PostgreSQL the instant in UTC, so every offset the format allows means what it says."""
    moment = f"2024-01-01T00:00:00{offset}"
    expect_from = [name for name, at in (("after", 12), ("before", -12)) if ANCHOR + timedelta(hours=at) >= instant]
    assert listed(client, auth, date_from=moment) == [around_anchor[n] for n in expect_from]
    expect_to = [name for name, at in (("after", 12), ("before", -12)) if ANCHOR + timedelta(hours=at) <= instant]
    assert listed(client, auth, date_to=moment) == [around_anchor[n] for n in expect_to]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"date_to": "9999-12-31T23:00:00-05:00"}, ["after", "before"]),  # after 9999-12-31 in UTC
        ({"date_from": "9999-12-31T23:00:00-05:00"}, []),
        ({"date_from": "0001-01-01T00:00:00+05:00"}, ["after", "before"]),  # before 0001-01-01 in UTC
        ({"date_to": "0001-01-01T00:00:00+05:00"}, []),
    ],
)
def test_instants_beyond_either_end_once_in_utc_are_answered(
    client: FlaskClient, auth: dict[str, str], around_anchor: dict[str, str], params: dict[str, str], expected: list[str]
) -> None:
    assert listed(client, auth, **params) == [around_anchor[name] for name in expected]


@pytest.mark.parametrize(
    "moment",
    [
        "2024-01-01T00:00:00+05:30:30.5",  # an offset with fractional seconds
        "2024-01-01T00:00:00+05:30:30",  # an offset with seconds: not ISO 8601
        "2024-01-01T00:00:00+24:00",
        "10000-01-01",
        "0000-12-31",
        "2024-02-30",
    ],
)
@pytest.mark.parametrize("field", ["date_from", "date_to"])
def test_an_instant_the_service_cannot_hold_is_a_400_naming_the_field(
    client: FlaskClient, auth: dict[str, str], data: Data, field: str, moment: str
) -> None:
    invalid(client.get(URL, query_string={field: moment}, headers=auth), field)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("2024-01-01T00:00:00+05:30:30.5", 400),
        ("9999-12-31T23:00:00-05:00", 200),  # beyond 9999 in UTC: the last instant the service holds
        ("0001-01-01T00:00:00+05:00", 200),
        ("2024-01-01T00:00:00+16:00", 200),  # the same instant the query parameter would be
        ("2024-01-01T00:00:00+00:00", 200),
    ],
)
def test_cursor_instants_go_through_the_same_parser(
    client: FlaskClient, auth: dict[str, str], data: Data, value: str, status: int
) -> None:
    cursor = cursor_of(["created_at", "DESC", value, str(uuid.uuid4())])
    resp = client.get(URL, query_string={"cursor": cursor}, headers=auth)
    if status == 400:
        invalid(resp, "cursor")
    else:
        assert resp.status_code == 200, resp.get_data(as_text=True)


def test_issued_cursors_are_utc_and_page_on(client: FlaskClient, auth: dict[str, str], data: Data, admin: dict[str, Any]) -> None:
    for hours in range(3):
        data.job(user=admin, created_at=ANCHOR + timedelta(hours=hours, microseconds=123))
    first = client.get(URL, query_string={"limit": 1}, headers=auth).get_json()["data"]["pagination"]["nextCursor"]
    payload = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    assert payload[2].endswith("+00:00") and ".000123" in payload[2]
    assert len(listed(client, auth, cursor=first, limit=5)) == 2


# --- text that cannot be encoded ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sort_by", "payload"),
    [
        ("status", ["status", "DESC", "\ud800", str(uuid.uuid4())]),  # psycopg2 cannot encode it
        ("created_at", ["\ud800", "DESC", "2024-01-01T00:00:00Z", str(uuid.uuid4())]),  # echoed in the 400
        ("created_at", ["created_at", "\udfff", "2024-01-01T00:00:00Z", str(uuid.uuid4())]),
        ("created_at", ["created_at", "DESC", "2024-01-01T00:00:00\ud800", str(uuid.uuid4())]),
        ("status", ["status", "DESC", "failed\x00", str(uuid.uuid4())]),
        ("priority", ["priority", "DESC", 2**31, str(uuid.uuid4())]),  # beyond the integer column
        ("priority", ["priority", "DESC", 1.5, str(uuid.uuid4())]),
        ("created_at", [{"a": 1}, "DESC", "2024-01-01T00:00:00Z", str(uuid.uuid4())]),
    ],
)
def test_a_cursor_holding_what_the_database_cannot_take_is_a_400(
    client: FlaskClient, auth: dict[str, str], data: Data, sort_by: str, payload: list[Any]
) -> None:
    resp = client.get(URL, query_string={"sort_by": sort_by, "cursor": cursor_of(payload)}, headers=auth)
    body = invalid(resp, "cursor")
    assert "\ud800" not in json.dumps(body, ensure_ascii=False)


def test_an_answer_with_unencodable_text_is_still_the_envelope(app: Flask) -> None:
    """The encoder never fails on a lone surrogate: it is replaced, not echoed."""

    @app.route("/test-only/unencodable")
    def _unencodable() -> Any:
        raise ApiError(400, "Invalid value \ud800 here", details=[{"field": "x\udfff", "message": "bad \ud800"}])

    resp = app.test_client().get("/test-only/unencodable")
    body = assert_error(resp, 400, "VALIDATION_ERROR")
    assert body["error"]["message"] == "Invalid value \ufffd here"
    assert body["error"]["details"] == [{"field": "x\ufffd", "message": "bad \ufffd"}]


# --- a DataError that gets past validation -------------------------------------------------

SECRET_VALUE = "2024-01-01T00:00:00+99:99-do-not-log-me"


def test_a_data_error_is_a_400_and_its_values_are_not_logged(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Any statement PostgreSQL refuses for a value (class 22, data exception) is the client's
    input: a 400 VALIDATION_ERROR, and the log says which error without the value."""

    @app.route("/test-only/data-error")
    def _data_error() -> Any:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT CAST(:v AS timestamptz)"), {"v": SECRET_VALUE})
        return "unreachable"

    with caplog.at_level(logging.DEBUG):
        resp = app.test_client().get("/test-only/data-error")
    body = assert_error(resp, 400, "VALIDATION_ERROR")
    assert SECRET_VALUE not in json.dumps(body)
    assert "22" in caplog.text  # the SQLSTATE is logged
    assert "do-not-log-me" not in caplog.text


def test_a_failing_statement_logs_no_bound_values(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A 500 logs its traceback; SQLAlchemy puts the statement's parameters in the exception's
    text unless the engine hides them."""

    @app.route("/test-only/program-error")
    def _program_error() -> Any:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT no_such_column, CAST(:v AS text)"), {"v": SECRET_VALUE})
        return "unreachable"

    with caplog.at_level(logging.DEBUG):
        resp = app.test_client().get("/test-only/program-error")
    assert_error(resp, 500, "INTERNAL_ERROR")
    assert "no_such_column" in caplog.text  # the traceback is there
    assert "do-not-log-me" not in caplog.text


def test_the_engine_keeps_bound_values_out_of_exception_text(engine: Engine) -> None:
    """Whoever logs a failed statement's exception (here or in a library) logs no parameters."""
    with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT no_such_column, CAST(:v AS text)"), {"v": SECRET_VALUE})
    assert "[parameters:" not in str(caught.value) and "hide_parameters=True" in str(caught.value)
