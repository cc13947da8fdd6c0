"""GET /admin/jobs/export against the real PostgreSQL (the app in-process): columns and order,
filters and sort, formats, CSV-injection-safe cells, the row cap, the file name, bad input, its
own rate limit and the keyset batches. Expected answers are worked out in Python from the rows
each test inserts. The transport (streaming under gunicorn, a client gone, a database error
mid-stream, other requests during an export) is tests/test_export_stream.py."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event

from admin_service.jobs.export import safe_cell
from admin_service.web import json_bytes
from tests.support.envelopes import assert_error
from tests.support.factories import JOB_COLUMNS, Data
from tests.support.settings import app_with

URL = "/admin/jobs/export"
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CSV_HEADER = [*JOB_COLUMNS, "user_email", "user_username"]


def client_with(database_url: str, engine: Engine, **env: Any) -> FlaskClient:
    return app_with(database_url, engine, **env).test_client()


def export(client: FlaskClient, auth: dict[str, str], params: Any = None) -> Any:
    resp = client.get(URL, query_string=params or {}, headers=auth)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp


def csv_rows(resp: Any) -> list[dict[str, str]]:
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    reader = csv.reader(io.StringIO(resp.get_data().decode("utf-8"), newline=""))
    header = next(reader)
    assert header == CSV_HEADER
    return [dict(zip(header, row, strict=True)) for row in reader]


def ndjson_rows(resp: Any) -> list[dict[str, Any]]:
    assert resp.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    body = resp.get_data().decode("utf-8")
    assert body == "" or body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], uuid.UUID(r["id"])), reverse=True)]


@pytest.fixture
def some_jobs(data: Data) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Seven jobs of two users (one of them without a user row), each created a minute apart."""
    alice = data.user(email="alice@example.com", username="alice")
    rows = []
    for i, status in enumerate(("completed", "failed", "queued", "processing", "cancelled", "failed", "completed")):
        rows.append(
            data.job(
                user=alice if i % 3 else None,
                status=status,
                created_at=T0 + timedelta(minutes=i),
                completed_at=T0 + timedelta(minutes=i, seconds=30) if status in ("completed", "failed") else None,
                error_message="timeout after 30012 ms" if status == "failed" else None,
                assessment_name="AI-Based IQ Test" if i % 2 else "Custom Assessment",
                priority=i - 3,
            )
        )
    return alice, rows


def test_csv_has_a_header_row_and_every_job_in_list_order(
    database_url: str, engine: Engine, auth: dict[str, str], some_jobs: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    alice, rows = some_jobs
    client = client_with(database_url, engine, EXPORT_BATCH_ROWS=3)  # three batches
    got = csv_rows(export(client, auth))
    assert [r["id"] for r in got] == newest_first(rows)
    by_id = {r["id"]: r for r in rows}
    for cells in got:
        job = by_id[cells["id"]]
        assert cells["job_id"] == job["job_id"]
        assert cells["status"] == job["status"]
        assert datetime.fromisoformat(cells["created_at"]) == job["created_at"]
        assert (datetime.fromisoformat(cells["completed_at"]) if cells["completed_at"] else None) == job["completed_at"]
        assert cells["processing_started_at"] == ""  # NULL is an empty cell
        assert int(cells["priority"]) == job["priority"]  # -3 stays a number, not an escaped text
        assert cells["error_message"] == (job["error_message"] or "")
        with_user = job["user_id"] == alice["id"]
        assert cells["user_email"] == ("alice@example.com" if with_user else "")
        assert cells["user_username"] == ("alice" if with_user else "")


def test_ndjson_lines_are_the_jobs_as_the_list_shows_them(
    client: FlaskClient, auth: dict[str, str], some_jobs: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    listed = client.get("/admin/jobs", query_string={"limit": 100}, headers=auth).get_json()["data"]["jobs"]
    got = ndjson_rows(export(client, auth, {"format": "ndjson"}))
    assert got == listed
    assert len(got) == 7


def test_every_filter_and_sort_of_the_list_applies(
    database_url: str, engine: Engine, auth: dict[str, str], some_jobs: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    alice, rows = some_jobs
    client = client_with(database_url, engine, EXPORT_BATCH_ROWS=2)
    cases: list[tuple[dict[str, Any] | list[tuple[str, str]], Any]] = [
        ({"status": "failed,cancelled"}, lambda r: r["status"] in ("failed", "cancelled")),
        ([("status", "completed"), ("status", "queued")], lambda r: r["status"] in ("completed", "queued")),
        ({"assessment_name": "iq"}, lambda r: r["assessment_name"] == "AI-Based IQ Test"),
        ({"user_email": "ALICE@"}, lambda r: r["user_id"] == alice["id"]),
        ({"search": "30012"}, lambda r: r["error_message"] is not None),
        ({"date_from": (T0 + timedelta(minutes=2)).isoformat(), "date_to": (T0 + timedelta(minutes=4)).isoformat()},
         lambda r: T0 + timedelta(minutes=2) <= r["created_at"] <= T0 + timedelta(minutes=4)),
    ]  # fmt: skip
    for params, keep in cases:
        got = [r["id"] for r in csv_rows(export(client, auth, params))]
        assert got == newest_first([r for r in rows if keep(r)]), params
    # Sorted by priority ascending (ties by id): the keyset of the list, batch after batch.
    got = [r["id"] for r in csv_rows(export(client, auth, {"sort_by": "priority", "sort_order": "asc"}))]
    assert got == [r["id"] for r in sorted(rows, key=lambda r: (r["priority"], uuid.UUID(r["id"])))]
    # completed_at descending: NULLs last, as the list orders them.
    got = [r["id"] for r in csv_rows(export(client, auth, {"sort_by": "completed_at"}))]
    done = sorted((r for r in rows if r["completed_at"]), key=lambda r: (r["completed_at"], uuid.UUID(r["id"])), reverse=True)
    rest = sorted((r for r in rows if not r["completed_at"]), key=lambda r: uuid.UUID(r["id"]), reverse=True)
    assert got == [r["id"] for r in done + rest]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_start_like_a_formula_are_escaped(
    client: FlaskClient, auth: dict[str, str], data: Data, start: str
) -> None:
    text = f'{start}HYPERLINK("http://evil.example","x")'
    user = data.user(email=f"{start}mail@example.com", username=f"{start}name")
    job = data.job(user=user, job_id=f"{start}job", error_message=text, assessment_name=text, status="failed", priority=-1)
    (cells,) = csv_rows(export(client, auth))
    for column, value in (
        ("job_id", job["job_id"]),
        ("error_message", text),
        ("assessment_name", text),
        ("user_email", user["email"]),
        ("user_username", user["username"]),
    ):
        assert cells[column] == "'" + value, column
    assert cells["priority"] == "-1"
    # NDJSON is data, not a spreadsheet: the values as they are.
    (line,) = ndjson_rows(export(client, auth, {"format": "ndjson"}))
    assert line["error_message"] == text and line["job_id"] == job["job_id"]


def test_text_is_utf8_and_csv_quoting_holds(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    message = 'Évaluation échouée: "quote", comma\nsecond line ✓'
    data.job(status="failed", error_message=message, assessment_name="Évaluation ✓")
    (cells,) = csv_rows(export(client, auth))
    assert cells["error_message"] == message
    assert cells["assessment_name"] == "Évaluation ✓"


def test_csv_bytes_are_what_a_csv_writer_writes(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    """The body byte for byte, against Python's csv.writer (RFC 4180 quoting, CRLF) of the cells
    as the export defines them: formula escape first, then quotes; NULL and '' both empty;
    instants ISO-8601 (fractions here of six digits: PostgreSQL drops trailing zeros)."""
    user = data.user(email="=x@example.com", username='a "b", c')
    tricky = data.job(
        user=user,
        status="queue",  # shown as `queued`
        job_id="-job\r\nwith lines",
        error_message='@SUM(A1) said "no", twice\n',
        assessment_name="Plain",
        result_id=str(uuid.uuid4()),
        priority=-2,
        created_at=T0 + timedelta(microseconds=123456),
        completed_at=T0 + timedelta(seconds=5),
        processing_started_at=T0 + timedelta(seconds=1, microseconds=654321),
    )
    orphan = data.job(status="failed", error_message="", created_at=T0 - timedelta(minutes=1))  # no user row

    def cells(job: dict[str, Any], who: dict[str, Any] | None) -> list[str]:
        shown = {"status": "queued" if job["status"] == "queue" else job["status"]}
        out = []
        for name in JOB_COLUMNS:
            value = shown.get(name, job[name])
            if value is None:
                out.append("")
            elif isinstance(value, datetime):
                out.append(value.isoformat())
            elif name in ("job_id", "status", "error_message", "assessment_name"):
                out.append(safe_cell(value))
            else:
                out.append(str(value))
        return [*out, *(safe_cell(who[k]) if who else "" for k in ("email", "username"))]

    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerow(cells(tricky, user))
    writer.writerow(cells(orphan, None))
    assert export(client, auth).get_data() == expected.getvalue().encode()


def test_ndjson_bytes_are_what_the_json_answers_write(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    """Each line byte for byte as the service's JSON encoder (json_bytes) writes the job: escapes
    of quotes, backslashes and control characters, non-ASCII as is, instants with and without a
    fraction, the status as shown, a missing user as null."""
    user = data.user(email="é@example.com", username='q"\\b')
    tricky = data.job(
        user=user,
        status="queue",
        error_message='line\nnext\ttab \x01\x1f\x7f "quoted" back\\slash ✓ </script>',
        assessment_name="Évaluation",
        result_id=str(uuid.uuid4()),
        priority=-7,
        created_at=T0 + timedelta(microseconds=1),
        completed_at=T0 + timedelta(seconds=3),
    )
    orphan = data.job(status="failed", error_message="", created_at=T0 - timedelta(minutes=1))

    def line(job: dict[str, Any], who: dict[str, Any] | None) -> bytes:
        doc = {**job, "status": "queued" if job["status"] == "queue" else job["status"]}
        doc["user"] = {"id": who["id"], "email": who["email"], "username": who["username"]} if who else None
        return json_bytes(doc) + b"\n"

    assert export(client, auth, {"format": "ndjson"}).get_data() == line(tricky, user) + line(orphan, None)


def test_the_row_cap_cuts_and_says_so(database_url: str, engine: Engine, auth: dict[str, str], data: Data) -> None:
    rows = [data.job(created_at=T0 + timedelta(minutes=i)) for i in range(6)]
    client = client_with(database_url, engine, EXPORT_MAX_ROWS=4, EXPORT_BATCH_ROWS=3)
    resp = export(client, auth)
    assert [r["id"] for r in csv_rows(resp)] == newest_first(rows)[:4]
    assert resp.headers["X-Export-Truncated"] == "true"
    assert resp.headers["X-Export-Max-Rows"] == "4"
    assert "_first4.csv" in resp.headers["Content-Disposition"]
    # Exactly as many as the cap: whole, not cut.
    resp = export(client, auth, {"date_from": (T0 + timedelta(minutes=2)).isoformat()})
    assert len(csv_rows(resp)) == 4
    assert resp.headers["X-Export-Truncated"] == "false"
    assert "_first" not in resp.headers["Content-Disposition"]


def test_the_file_name_says_what_was_exported_and_when(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    data.job(status="failed", assessment_name="AI-Based IQ Test")
    before = datetime.now(UTC).replace(microsecond=0)
    resp = export(
        client, auth, {"format": "ndjson", "status": "failed,cancelled", "assessment_name": "IQ Test", "sort_by": "priority"}
    )
    match = re.fullmatch(r'attachment; filename="([A-Za-z0-9._+-]+)"', resp.headers["Content-Disposition"])
    assert match, resp.headers["Content-Disposition"]
    name = match.group(1)
    assert name.startswith("jobs_failed-cancelled_assessmentname-iq-test_by-priority-desc_")
    assert name.endswith(".ndjson")
    stamp = datetime.strptime(name.split("_")[-1].removesuffix(".ndjson"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
    assert export(client, auth).headers["Content-Disposition"].startswith('attachment; filename="jobs_2')


def test_an_empty_export_is_a_header_row_or_nothing(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    assert csv_rows(export(client, auth, {"status": "failed"})) == []
    assert ndjson_rows(export(client, auth, {"format": "ndjson"})) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "xlsx"}, "format"),
        ({"page": "2"}, "page"),  # no paging: the whole list
        ({"cursor": "abc"}, "cursor"),
        ({"limit": "10"}, "limit"),
        ({"status": "done"}, "status"),
        ({"sort_by": "job_id"}, "sort_by"),
        ({"date_from": "yesterday"}, "date_from"),
        ({"date_from": "2026-03-10", "date_to": "2026-03-01"}, "date_from"),
        ([("format", "csv"), ("format", "ndjson")], "format"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: FlaskClient, auth: dict[str, str], data: Data, params: Any, field: str
) -> None:
    body = assert_error(client.get(URL, query_string=params, headers=auth), 400, "VALIDATION_ERROR")
    assert field in [d["field"] for d in body["error"]["details"]], body


def test_an_export_needs_an_admin_token(client: FlaskClient, data: Data) -> None:
    assert_error(client.get(URL), 401, "UNAUTHORIZED")


def test_exports_have_their_own_rate_limit(database_url: str, engine: Engine, auth: dict[str, str], data: Data) -> None:
    data.job()
    client = client_with(database_url, engine, RATE_LIMIT="1000 per minute", EXPORT_RATE_LIMIT="2 per minute")
    for _ in range(2):
        resp = export(client, auth)
        assert resp.headers["X-RateLimit-Limit"] == "2"
    body = assert_error(client.get(URL, headers=auth), 429, "RATE_LIMIT_EXCEEDED")
    assert body["error"]["message"]
    # The page views' budget is untouched by exports, and page views do not spend the export's.
    listed = client.get("/admin/jobs", headers=auth)
    assert listed.status_code == 200
    assert listed.headers["X-RateLimit-Limit"] == "1000"
    assert int(listed.headers["X-RateLimit-Remaining"]) == 999


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_rows_are_read_in_keyset_batches_never_offset(
    database_url: str, engine: Engine, auth: dict[str, str], data: Data, statements: list[str]
) -> None:
    rows = [data.job(created_at=T0 + timedelta(minutes=i)) for i in range(10)]
    client = client_with(database_url, engine, EXPORT_BATCH_ROWS=4)
    statements.clear()
    got = csv_rows(export(client, auth))
    assert [r["id"] for r in got] == newest_first(rows)
    pages = [s for s in statements if "AS page_user" in s]
    assert len(pages) == 3  # 4 + 4 + 2 rows: the short batch ends it
    assert not any("OFFSET" in s.upper() for s in statements)
    assert all("LIMIT" in s for s in pages)
