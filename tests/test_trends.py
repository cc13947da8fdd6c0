"""GET /admin/jobs/trends against real rows. Expected buckets come from SQL of their own:
date_trunc(..., zone) in the stats time zone (not the width_bucket bounds the service uses),
counts, percentile_cont and the queue at each bucket end by a join on the bucket ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.support.factories import Data
from tests.support.settings import app_with

ZONE = "America/New_York"  # DST ends on Sunday 2026-11-01 at 02:00 local (06:00 UTC): a 25-hour day
TZ = ZoneInfo(ZONE)
NAMES = ("AI-Based IQ Test", "Custom Assessment")

EXPECTED_SQL = """
WITH b AS (
    SELECT date_trunc(:unit, created_at, :tz) AS start, assessment_name, status,
           CASE WHEN status = 'completed' THEN date_part('epoch', completed_at - coalesce(processing_started_at, created_at)) END AS pt,
           date_part('epoch', processing_started_at - created_at) AS qw
    FROM archive.analysis_jobs WHERE created_at >= :lo AND created_at < :hi {name_filter}
)
SELECT start, count(*) AS created,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY pt) AS pt50, percentile_cont(0.95) WITHIN GROUP (ORDER BY pt) AS pt95,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY qw) AS qw50, percentile_cont(0.95) WITHIN GROUP (ORDER BY qw) AS qw95
FROM b GROUP BY start
"""

QUEUED_SQL = """
SELECT e AS end_at, count(j.id) AS queued
FROM unnest(CAST(:ends AS timestamptz[])) AS e
LEFT JOIN archive.analysis_jobs j
  ON j.created_at <= e
 AND coalesce(j.processing_started_at, CASE WHEN j.status IN ('queued', 'queue') THEN 'infinity' ELSE coalesce(j.completed_at, j.updated_at) END) > e
 {name_filter}
GROUP BY e
"""


def utc(text_value: str) -> datetime:
    return datetime.fromisoformat(text_value.replace("Z", "+00:00"))


def seed(data: Data, start: datetime, hours: int) -> None:
    """Every few hours of the range: jobs of each status and both names, with known times."""
    for h in range(0, hours, 3):
        at = start + timedelta(hours=h, minutes=17)
        name = NAMES[h % 2]
        data.job(
            status="completed",
            created_at=at,
            processing_started_at=at + timedelta(seconds=5 + h),
            completed_at=at + timedelta(seconds=60 + 7 * h),
            assessment_name=name,
        )
        if h % 2 == 0:
            data.job(
                status="failed",
                created_at=at + timedelta(minutes=1),
                processing_started_at=at + timedelta(minutes=2),
                assessment_name=name,
            )
        if h % 5 == 0:
            data.job(
                status="cancelled",
                created_at=at + timedelta(minutes=2),
                updated_at=at + timedelta(minutes=40),
                assessment_name=name,
            )
        if h % 4 == 0:
            # Queued for 2 h 30 min, then processed: queued at two or three bucket ends.
            data.job(
                status="processing",
                created_at=at,
                processing_started_at=at + timedelta(hours=2, minutes=30),
                assessment_name=name,
            )
    data.job(
        status="queue", created_at=start - timedelta(days=3), assessment_name=NAMES[0]
    )  # still queued, long before the range


def expected_buckets(engine: Engine, unit: str, lo: datetime, hi: datetime, name: str | None = None) -> dict[datetime, Any]:
    name_filter = "AND assessment_name = :name" if name else ""
    with engine.connect() as conn:
        rows = conn.execute(
            text(EXPECTED_SQL.format(name_filter=name_filter)), {"unit": unit, "tz": ZONE, "lo": lo, "hi": hi, "name": name}
        )
        return {row.start: row for row in rows}


def expected_queue(engine: Engine, ends: list[datetime], name: str | None = None) -> dict[datetime, int]:
    name_filter = "AND j.assessment_name = :name" if name else ""
    with engine.connect() as conn:
        rows = conn.execute(text(QUEUED_SQL.format(name_filter=name_filter)), {"ends": ends, "name": name})
        return {row.end_at: row.queued for row in rows}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def check_series(series: list[dict[str, Any]], want: dict[datetime, Any], queue: dict[datetime, int]) -> None:
    for point in series:
        row = want.get(utc(point["start"]))
        if row is None:
            assert (point["created"], point["failed"], point["failureRate"]) == (0, 0, None), point  # zero-filled
        else:
            assert (point["created"], point["completed"], point["failed"], point["cancelled"]) == (
                row.created,
                row.completed,
                row.failed,
                row.cancelled,
            ), point
            finished = row.completed + row.failed
            assert point["failureRate"] == (round(row.failed / finished, 4) if finished else None)
            assert point["processingTimeSeconds"] == {"p50": rounded(row.pt50), "p95": rounded(row.pt95)}
            assert point["queueWaitSeconds"] == {"p50": rounded(row.qw50), "p95": rounded(row.qw95)}
        assert point["queuedAtEnd"] == queue[utc(point["end"])], point


def test_days_across_the_dst_change(database_url: str, engine: Engine, auth: dict[str, str], data: Data) -> None:
    start = datetime(2026, 10, 29, tzinfo=TZ)
    seed(data, start, hours=24 * 5)
    client = app_with(database_url, engine, STATS_TIMEZONE=ZONE).test_client()
    response = client.get("/admin/jobs/trends?bucket=day&from=2026-10-29&to=2026-11-03", headers=auth)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["data"]
    series = result["series"]
    assert [p["label"] for p in series] == ["2026-10-29", "2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    lengths = [(utc(p["end"]) - utc(p["start"])) / timedelta(hours=1) for p in series]
    assert lengths == [24, 24, 24, 25, 24, 24]  # 1 November has 25 hours in New York
    lo, hi = utc(series[0]["start"]), utc(series[-1]["end"])
    assert lo == datetime(2026, 10, 29, 4, tzinfo=UTC) and hi == datetime(2026, 11, 4, 5, tzinfo=UTC)
    want = expected_buckets(engine, "day", lo, hi)
    assert set(want) == {utc(p["start"]) for p in series if p["created"]}  # date_trunc agrees with the bounds
    assert series[-1]["created"] == 0  # no jobs on the last day: zero-filled, not left out
    check_series(series, want, expected_queue(engine, [utc(p["end"]) for p in series]))
    assert result["timezone"] == ZONE and result["bucket"] == "day" and result["groups"] is None


def test_hours_across_the_dst_change_and_groups(database_url: str, engine: Engine, auth: dict[str, str], data: Data) -> None:
    start = datetime(2026, 10, 31, 12, tzinfo=TZ)
    seed(data, start, hours=36)
    client = app_with(database_url, engine, STATS_TIMEZONE=ZONE).test_client()
    query = "bucket=hour&from=2026-11-01&to=2026-11-01&group_by=assessment_name"
    response = client.get(f"/admin/jobs/trends?{query}", headers=auth)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()["data"]
    series = result["series"]
    labels = [p["label"] for p in series]
    assert len(series) == 25 and labels[1:3] == ["2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00"]
    lo, hi = utc(series[0]["start"]), utc(series[-1]["end"])
    ends = [utc(p["end"]) for p in series]
    want = expected_buckets(engine, "hour", lo, hi)
    assert set(want) <= {utc(p["start"]) for p in series}
    check_series(series, want, expected_queue(engine, ends))
    assert (
        max(p["queuedAtEnd"] for p in series) >= 2 and sum(p["cancelled"] for p in series) >= 1
    )  # the data shows what is tested
    assert [g["assessment_name"] for g in result["groups"]] == sorted(NAMES)
    for group in result["groups"]:
        name = group["assessment_name"]
        check_series(group["series"], expected_buckets(engine, "hour", lo, hi, name), expected_queue(engine, ends, name))
    # Filtered by one assessment, the totals are that assessment's.
    response = client.get("/admin/jobs/trends?bucket=hour&from=2026-11-01&to=2026-11-01&assessment_name=iq", headers=auth)
    check_series(
        response.get_json()["data"]["series"],
        expected_buckets(engine, "hour", lo, hi, NAMES[0]),
        expected_queue(engine, ends, NAMES[0]),
    )


def test_weeks_start_on_monday_and_future_ends_are_unknown(
    client: FlaskClient, auth: dict[str, str], data: Data, engine: Engine
) -> None:
    now = datetime.now(UTC)
    data.job(status="queued", created_at=now - timedelta(days=2))
    response = client.get("/admin/jobs/trends?bucket=week&from=" + (now - timedelta(days=20)).date().isoformat(), headers=auth)
    assert response.status_code == 200
    series = response.get_json()["data"]["series"]
    assert all(datetime.fromisoformat(p["label"]).weekday() == 0 for p in series)
    assert series[-1]["queuedAtEnd"] is None and utc(series[-1]["end"]) > now  # this week is not over
    assert series[-2]["queuedAtEnd"] == expected_queue(engine, [utc(series[-2]["end"])])[utc(series[-2]["end"])]


def test_default_range_and_sharing(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    response = client.get("/admin/jobs/trends", headers=auth)
    assert response.status_code == 200
    result = response.get_json()["data"]
    assert result["bucket"] == "day" and len(result["series"]) == 31  # 30 days back from now, whole days
    again = client.get("/admin/jobs/trends", headers=auth).get_json()
    assert again["message"].startswith("Job trends (shared, computed") and again["data"]["shared"]["ageMs"] > 0


def test_range_limits_and_bad_parameters_are_400s_naming_the_field(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    cases = {
        "?bucket=hour&from=2026-11-01&to=2026-11-08": ("from", "7 days"),
        "?bucket=day&from=2026-01-01&to=2026-04-01": ("from", "90 days"),
        "?bucket=week&from=2025-01-01&to=2026-06-01": ("from", "366 days"),
        "?bucket=minute": ("bucket", "Must be one of"),
        "?group_by=user_id": ("group_by", "Must be one of"),
        "?from=2026-11-05&to=2026-11-01": ("from", "after"),
        "?to=9999-12-31": ("to", "before"),
        "?from=2026-13-01": ("from", "ISO-8601"),
        "?bucket=day&bucket=hour": ("bucket", "once"),
    }
    for query, (field, words) in cases.items():
        response = client.get(f"/admin/jobs/trends{query}", headers=auth)
        body = response.get_json()
        assert response.status_code == 400, (query, body)
        detail = body["error"]["details"][0]
        assert detail["field"] == field and words in detail["message"], (query, detail)
    # The limits themselves are allowed: 90 whole days by day, 7 days by hour.
    assert client.get("/admin/jobs/trends?bucket=day&from=2026-01-01&to=2026-03-31", headers=auth).status_code == 200
    assert client.get("/admin/jobs/trends?bucket=hour&from=2026-03-01&to=2026-03-07", headers=auth).status_code == 200
