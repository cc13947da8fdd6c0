"""GET /admin/jobs/failures and the list's `signature` filter against real rows. Expected groups,
days and job sets are computed here with SQL of their own (the message family is the first
word of each test message; its signature is written out by hand)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.support.factories import Data
from tests.support.settings import app_with

# family (first word) -> (message template, its signature)
FAMILIES = {
    "timeout": ("timeout after {n} ms on job {uuid}", "timeout after <num> ms on job <uuid>"),
    "Invalid": ("Invalid payload '{word}' read from /srv/in/{n}/payload.json", "Invalid payload <str> read from <path>"),
    "Scoring": ("Scoring worker 0x{hex} died at 2026-11-{day:02d}T10:{n2:02d}:00Z", "Scoring worker <hex> died at <ts>"),
}


def message(family: str, i: int) -> str:
    template = FAMILIES[family][0]
    return template.format(n=30_000 + i * 7, uuid=uuid.uuid4(), word=f"field{i}", hex=f"{i + 4096:x}", day=1 + i % 28, n2=i % 60)


def get(client: FlaskClient, auth: dict[str, str], query: str) -> Any:
    response = client.get(f"/admin/jobs/failures{query}", headers=auth)
    return response.status_code, response.get_json()


def expected_groups(
    engine: Engine, start: datetime, end: datetime, zone: str, name: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per family: count, first/last seen, per-day counts, assessments, ids (own SQL)."""
    family = "coalesce(nullif(split_part(error_message, ' ', 1), ''), '<none>')"
    where = "status = 'failed' AND created_at >= :start AND created_at < :end" + (
        " AND assessment_name ILIKE '%' || :name || '%'" if name else ""
    )
    params = {"start": start, "end": end, "tz": zone, "name": name}
    with engine.connect() as conn:
        groups = {
            row.family: {
                "count": row.n,
                "firstSeen": row.first,
                "lastSeen": row.last,
                "assessments": sorted(row.names),
                "ids": set(map(str, row.ids)),
                "perDay": {},
            }
            for row in conn.execute(
                text(
                    f"SELECT {family} AS family, count(*) AS n, min(created_at) AS first, max(created_at) AS last, "
                    f"array_agg(DISTINCT assessment_name) AS names, array_agg(id) AS ids "
                    f"FROM archive.analysis_jobs WHERE {where} GROUP BY 1"
                ),
                params,
            )
        }
        for row in conn.execute(
            text(
                f"SELECT {family} AS family, (created_at AT TIME ZONE :tz)::date AS day, count(*) AS n "
                f"FROM archive.analysis_jobs WHERE {where} GROUP BY 1, 2"
            ),
            params,
        ):
            groups[row.family]["perDay"][row.day.isoformat()] = row.n
    return groups


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz)


def seed(data: Data, now: datetime) -> None:
    """Failed jobs of three families and without a message over 10 days, and jobs that must not count."""
    names = ("AI-Based IQ Test", "Custom Assessment", "AI-Driven Talent Mapping")
    for i in range(24):
        data.job(
            status="failed",
            created_at=now - timedelta(hours=5 * i + 1),
            error_message=message("timeout", i),
            assessment_name=names[i % 3],
        )
    for i in range(9):
        data.job(
            status="failed",
            created_at=now - timedelta(hours=11 * i + 2),
            error_message=message("Invalid", i),
            assessment_name=names[0],
        )
    for i in range(4):
        data.job(
            status="failed",
            created_at=now - timedelta(hours=30 * i + 3),
            error_message=message("Scoring", i),
            assessment_name=names[1],
        )
    for i in range(3):
        data.job(status="failed", created_at=now - timedelta(hours=20 * i + 4), error_message=None if i else "   ")
    # Not failures: other statuses with a message, and failures older than any range asked here.
    data.job(status="completed", created_at=now - timedelta(hours=1), error_message=message("timeout", 99))
    data.job(status="queued", created_at=now - timedelta(hours=1), error_message=message("Invalid", 99))
    data.job(status="failed", created_at=now - timedelta(days=40), error_message=message("timeout", 98))


def test_groups_match_the_failed_jobs_of_the_range(client: FlaskClient, auth: dict[str, str], data: Data, engine: Engine) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    tz = ZoneInfo("UTC")
    first_day = now.date() - timedelta(days=6)
    status, body = get(client, auth, "?fresh=true")
    assert status == 200, body
    result = body["data"]
    start, end = local_midnight(first_day, tz), local_midnight(now.date() + timedelta(days=1), tz)
    expected = expected_groups(engine, start, end, "UTC")
    signature_of = {family: sig for family, (_, sig) in FAMILIES.items()} | {"<none>": "<none>"}

    assert result["range"]["firstDay"] == first_day.isoformat() and result["range"]["lastDay"] == now.date().isoformat()
    assert result["totalFailures"] == sum(g["count"] for g in expected.values())
    assert result["pagination"]["total"] == len(expected) == 4
    counts = [g["count"] for g in result["groups"]]
    assert counts == sorted(counts, reverse=True)
    days = [(first_day + timedelta(days=i)).isoformat() for i in range(7)]
    for group in result["groups"]:
        family = next(f for f, sig in signature_of.items() if sig == group["signature"])
        want = expected[family]
        assert group["count"] == want["count"]
        assert group["share"] == round(want["count"] / result["totalFailures"], 4)
        assert datetime.fromisoformat(group["firstSeen"]) == want["firstSeen"]
        assert datetime.fromisoformat(group["lastSeen"]) == want["lastSeen"]
        assert group["perDay"] == [{"date": d, "count": want["perDay"].get(d, 0)} for d in days]
        assert group["assessments"] == want["assessments"]
        assert len(group["sampleJobIds"]) == min(5, want["count"]) and set(group["sampleJobIds"]) <= want["ids"]
        if family != "<none>":
            assert group["example"].startswith(family)  # one raw message of the group, placeholders filled in


def test_each_groups_filter_lists_exactly_its_jobs(client: FlaskClient, auth: dict[str, str], data: Data, engine: Engine) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    status, body = get(client, auth, "?fresh=true")
    assert status == 200
    tz = ZoneInfo("UTC")
    start = local_midnight(now.date() - timedelta(days=6), tz)
    end = local_midnight(now.date() + timedelta(days=1), tz)
    expected = expected_groups(engine, start, end, "UTC")
    for group in body["data"]["groups"]:
        listed = client.get(group["listUrl"] + "&limit=100", headers=auth).get_json()["data"]
        family = next(f for f, g in expected.items() if g["count"] == group["count"] and set(group["sampleJobIds"]) <= g["ids"])
        assert {job["id"] for job in listed["jobs"]} == expected[family]["ids"]
        assert listed["pagination"]["total"] == group["count"]
        assert group["filter"]["status"] == "failed" and group["filter"]["signature"] == group["signature"]


def test_signature_filter_works_on_its_own_and_with_other_filters(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC)
    a = data.job(status="failed", error_message="timeout after 31 ms on job 1", created_at=now - timedelta(hours=1))
    b = data.job(status="completed", error_message="timeout after 9 ms on job 22 ", created_at=now - timedelta(hours=2))
    data.job(status="failed", error_message="timeout after many ms on job 1", created_at=now - timedelta(hours=3))
    data.job(status="failed", error_message=None, created_at=now - timedelta(hours=3))

    def ids(query: str) -> set[str]:
        response = client.get(f"/admin/jobs?{query}", headers=auth)
        assert response.status_code == 200, response.get_json()
        return {job["id"] for job in response.get_json()["data"]["jobs"]}

    assert ids("signature=timeout after <num> ms on job <num>") == {a["id"], b["id"]}
    assert ids("signature=timeout after <num> ms on job <num>&status=failed") == {a["id"]}
    assert ids("signature=timeout after <num>") == set()  # a signature is matched whole, not as a prefix
    assert len(ids("signature=<none>&status=failed")) == 1
    response = client.get("/admin/jobs?signature=" + "x" * 241, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "signature"


def test_normalisation_rules(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    cases = {
        "timeout after 30012 ms on job 4f3a9c2e-1b2d-4e5f-8a9b-0c1d2e3f4a5b": "timeout after <num> ms on job <uuid>",
        "can't open 'reports.json' at /var/data/x/y.json": "can't open <str> at <path>",
        "worker 0x7ffd3a crashed at 2026-12-03T12:16:14.123Z (pid 4412)": "worker <hex> crashed at <ts> (pid <num>)",
        'hash deadbeef1234 mismatch: expected "abc" got `def`': "hash <hex> mismatch: expected <str> got <str>",
        "fetch https://scoring.internal:8443/v2/score?id=7 failed: HTTP 502": "fetch <path> failed: HTTP <num>",
        "  multi\n line   message  ": "multi line message",
        "retries=3/5 took 1.25s on utf8 codec": "retries=<num>/<num> took <num>s on utf8 codec",
    }
    now = datetime.now(UTC)
    for i, raw in enumerate(cases):
        data.job(status="failed", error_message=raw, created_at=now - timedelta(minutes=i + 1))
    status, body = get(client, auth, "?fresh=true&limit=100")
    assert status == 200
    assert {g["signature"]: g["example"] for g in body["data"]["groups"]} == {sig: raw for raw, sig in cases.items()}


def test_paging_assessment_filter_and_time_zone(database_url: str, engine: Engine, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    zone = "Pacific/Kiritimati"  # UTC+14: its days are not UTC days
    tz = ZoneInfo(zone)
    client = app_with(database_url, engine, STATS_TIMEZONE=zone).test_client()
    today = now.astimezone(tz).date()
    first = today - timedelta(days=2)
    status, body = get(client, auth, f"?from={first}&to={today}&assessment_name=iq test&limit=1&page=2&fresh=true")
    assert status == 200, body
    result = body["data"]
    expected = expected_groups(
        engine, local_midnight(first, tz), local_midnight(today + timedelta(days=1), tz), zone, name="iq test"
    )
    ranked = sorted(expected.items(), key=lambda item: (-item[1]["count"], FAMILIES[item[0]][1]))
    assert result["pagination"] == {
        "total": len(expected),
        "page": 2,
        "limit": 1,
        "totalPages": len(expected),
        "hasNext": len(expected) > 2,
        "hasPrev": True,
    }
    (group,) = result["groups"]
    family, want = ranked[1]
    assert group["signature"] == FAMILIES[family][1] and group["count"] == want["count"]
    assert [d["date"] for d in group["perDay"]] == [(first + timedelta(days=i)).isoformat() for i in range(3)]
    assert {d["date"]: d["count"] for d in group["perDay"] if d["count"]} == want["perDay"]
    assert group["filter"]["assessment_name"] == "iq test"
    assert result["range"]["timezone"] == zone
    # A page past the last one is empty, with the totals still said.
    status, body = get(client, auth, f"?from={first}&to={today}&assessment_name=iq test&page=9&fresh=true")
    assert body["data"]["groups"] == [] and body["data"]["pagination"]["total"] == len(expected)


def test_shared_per_interval_and_fresh_recomputes(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    data.job(status="failed", error_message="boom 1", created_at=datetime.now(UTC) - timedelta(hours=1))
    status, first = get(client, auth, "?fresh=true")
    assert first["message"] == "Failure groups (computed now)" and first["data"]["shared"]["ageMs"] == 0
    data.job(status="failed", error_message="boom 2", created_at=datetime.now(UTC) - timedelta(hours=1))
    status, again = get(client, auth, "")
    # The interval (TRIAGE_SHARE_MS, 60 s by default) has not passed: the same figures, said to be shared.
    assert again["data"]["totalFailures"] == 1 and again["message"].startswith("Failure groups (shared, computed")
    assert again["data"]["shared"]["intervalMs"] == 60_000
    status, fresh = get(client, auth, "?fresh=true")
    assert fresh["data"]["totalFailures"] == 2


def test_bad_ranges_and_parameters_are_400s_naming_the_field(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    cases = {
        "?from=2026-01-01&to=2026-06-30": ("from", "90 days"),
        "?from=2026-02-01&to=2026-01-01": ("from", "after"),
        "?from=yesterday": ("from", "ISO-8601"),
        "?limit=0": ("limit", ""),
        "?page=0": ("page", ""),
        "?bucket=day": ("bucket", "Unknown"),
        "?assessment_name=": ("assessment_name", ""),
    }
    for query, (field, words) in cases.items():
        status, body = get(client, auth, query)
        assert status == 400, (query, body)
        detail = body["error"]["details"][0]
        assert detail["field"] == field and words in detail["message"], (query, detail)


def test_failures_need_an_admin_token(client: FlaskClient, data: Data) -> None:
    response = client.get("/admin/jobs/failures")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "UNAUTHORIZED"
