"""The sorts served by the owner's (status, priority, created_at) index (per-status branches):
their order against PostgreSQL's own ORDER BY, with and without filters, cursor walks, plans."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.support.factories import Data
from tests.support.plans import explained, statements_run
from tests.test_jobs_list import get, ids, ok, walk_cursor

SHOWN_STATUS = "(CASE WHEN status = 'queue' THEN 'queued' ELSE status END)"
# The test's own statement of each documented order.
ORDER_BY = {
    "created_at": "created_at {o}, id {o}",
    "updated_at": "updated_at {o}, id {o}",
    "completed_at": "completed_at {o} NULLS LAST, id {o}",
    "priority": "priority {o}, created_at {o}, id {o}",
    "status": SHOWN_STATUS + " {o}, priority {o}, created_at {o}, id {o}",
}
SORTS = [(s, o) for s in ORDER_BY for o in ("ASC", "DESC")]


def many_ties(data: Data, rows: int = 120) -> None:
    """Rows whose sort columns tie a lot: 3 priorities, 7 created_at values, a third with NULL
    completed_at, both spellings of queued, two assessments, four users, some error messages."""
    data.execute(
        "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, priority, created_at, updated_at, "
        "completed_at, assessment_name, error_message) "
        "SELECT md5('row' || n)::uuid, 'tie-' || n, md5('user' || n % 4)::uuid, "
        "(ARRAY['queue', 'queued', 'processing', 'completed', 'failed', 'cancelled'])[1 + n % 6], "
        "n % 3, timestamptz '2026-03-10 00:00+00' + (n % 7) * interval '1 hour', "
        "timestamptz '2026-03-10 00:00+00' + (n % 5) * interval '1 minute', "
        "CASE WHEN n % 3 = 0 THEN NULL ELSE timestamptz '2026-03-11 00:00+00' + (n % 2) * interval '1 hour' END, "
        "CASE WHEN n % 2 = 0 THEN 'IQ Test' ELSE 'Big Five' END, "
        "CASE WHEN n % 4 = 1 THEN 'worker timeout after 30s' END "
        "FROM generate_series(1, :rows) AS n",
        rows=rows,
    )


def ordered_ids(data: Data, sort_by: str, order: str, where: str = "true", **params: Any) -> list[str]:
    sql = f"SELECT id FROM archive.analysis_jobs WHERE {where} ORDER BY {ORDER_BY[sort_by].format(o=order)}"
    with data.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(text(sql), params)]


@pytest.mark.parametrize(("sort_by", "sort_order"), SORTS)
def test_every_sort_is_the_databases_own_order_by_on_page_cursor_and_offset(
    client: FlaskClient, data: Data, auth: dict[str, str], sort_by: str, sort_order: str
) -> None:
    many_ties(data)
    expected = ordered_ids(data, sort_by, sort_order)
    assert ids(ok(get(client, auth, {"sort_by": sort_by, "sort_order": sort_order, "limit": 100}))) == expected[:100]
    walked = walk_cursor(client, auth, {"sort_by": sort_by, "sort_order": sort_order, "limit": 7})
    flat = [i for page in walked for i in page]
    assert flat == expected and len(set(flat)) == len(expected)
    page3 = ok(get(client, auth, {"sort_by": sort_by, "sort_order": sort_order, "limit": 11, "page": 3}))
    assert ids(page3) == expected[22:33]


FILTERS = [
    pytest.param({"status": "queued,failed"}, "status IN ('queue', 'queued', 'failed')", id="status"),
    pytest.param({"assessment_name": "iq"}, "assessment_name = 'IQ Test'", id="assessment"),
    pytest.param({"user_id": "USER"}, "user_id = CAST(:user AS uuid)", id="user"),
    pytest.param(
        {"date_from": "2026-03-10T02:00:00Z", "date_to": "2026-03-10T04:00:00Z"},
        "created_at BETWEEN '2026-03-10 02:00+00' AND '2026-03-10 04:00+00'",
        id="date range",
    ),
    pytest.param({"search": "timeout"}, "error_message LIKE '%timeout%'", id="search"),
]


@pytest.mark.parametrize("sort_by", ["priority", "status"])
@pytest.mark.parametrize("sort_order", ["ASC", "DESC"])
@pytest.mark.parametrize(("params", "where"), FILTERS)
def test_branch_sorts_with_each_filter(
    client: FlaskClient,
    data: Data,
    auth: dict[str, str],
    sort_by: str,
    sort_order: str,
    params: dict[str, str],
    where: str,
) -> None:
    many_ties(data)
    user = _a_user(data)
    params = {k: (user if v == "USER" else v) for k, v in params.items()}
    expected = ordered_ids(data, sort_by, sort_order, where, user=user)
    assert 3 < len(expected) < 120, where
    walked = walk_cursor(client, auth, {**params, "sort_by": sort_by, "sort_order": sort_order, "limit": 4})
    assert [i for page in walked for i in page] == expected


def _a_user(data: Data) -> str:
    with data.engine.connect() as conn:
        return str(conn.execute(text("SELECT min(user_id::text) FROM archive.analysis_jobs")).scalar_one())


def test_a_status_outside_the_vocabulary_is_still_listed(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    """The branches come from the stored values (a skip scan), not from the vocabulary: a row
    whose status the service does not know is not lost from the priority sort."""
    many_ties(data, rows=12)
    data.execute("UPDATE archive.analysis_jobs SET status = 'paused' WHERE job_id = 'tie-5'")
    for order in ("ASC", "DESC"):
        walked = walk_cursor(client, auth, {"sort_by": "priority", "sort_order": order, "limit": 5})
        assert [i for page in walked for i in page] == ordered_ids(data, "priority", order)


@pytest.mark.parametrize("sort_by", ["priority", "status"])
@pytest.mark.parametrize("sort_order", ["ASC", "DESC"])
def test_priority_and_status_pages_do_not_sort_the_table(
    client: FlaskClient, data: Data, auth: dict[str, str], engine: Engine, sort_by: str, sort_order: str
) -> None:
    """Page one and a cursor page walk the (status, priority, created_at) index per status: no
    scan of the whole table, and every Sort sorts only what the branches' page limits let up."""
    data.execute(
        "INSERT INTO archive.analysis_jobs (job_id, user_id, status, priority, created_at) "
        "SELECT 'bulk-' || n, gen_random_uuid(), (ARRAY['queue', 'queued', 'completed', 'failed'])[1 + n % 4], "
        "n % 10, now() - n * interval '1 second' FROM generate_series(1, 20000) AS n"
    )
    data.execute("ANALYZE archive.analysis_jobs")

    def walk(statement: str) -> bool:
        return "LIMIT" in statement and "analysis_jobs" in statement and "stored_statuses" in statement

    with statements_run(engine, walk) as seen:
        params = {"count": "none", "sort_by": sort_by, "sort_order": sort_order}
        first = ok(get(client, auth, params))
        second = ok(get(client, auth, {**params, "cursor": first["pagination"]["nextCursor"]}))
        assert set(ids(first)).isdisjoint(ids(second))
    assert len(seen) == 2
    for nodes in explained(engine, seen, analyze=True):
        scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "analysis_jobs"]
        assert scans and all("Index" in scan for scan in scans), scans
        assert any(n.get("Index Name") == "idx_analysis_jobs_queue" for n in nodes)
        # A Sort's input: at most a page (51 rows) from each of the 4 stored statuses' branches.
        sorted_rows = [c["Actual Rows"] * c["Actual Loops"] for n in nodes if n["Node Type"] == "Sort" for c in n["Plans"]]
        assert sorted_rows and all(rows <= 4 * 51 for rows in sorted_rows), sorted_rows
