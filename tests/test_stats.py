"""GET /admin/jobs/stats against real rows, every figure recomputed here in plain Python."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from admin_service import create_app
from tests.support.factories import Data
from tests.support.settings import make_settings

STATUS_KEYS = ("queued", "processing", "completed", "failed", "cancelled")
ALIAS = {"queue": "queued"}


# --- reference computations (independent of the service's SQL) -----------------------


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def local_day(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def processing_seconds(job: dict[str, Any]) -> float | None:
    if job["status"] != "completed" or job["completed_at"] is None:
        return None
    start = job["processing_started_at"] or job["created_at"]
    return (job["completed_at"] - start).total_seconds()


def queue_wait_seconds(job: dict[str, Any]) -> float | None:
    if job["processing_started_at"] is None:
        return None
    return (job["processing_started_at"] - job["created_at"]).total_seconds()


def expected_daily(jobs: list[dict[str, Any]], today: date, tz: ZoneInfo) -> list[dict[str, Any]]:
    days = [today - timedelta(days=offset) for offset in range(6, -1, -1)]
    rows = []
    for day in days:
        on_day = [j for j in jobs if local_day(j["created_at"], tz) == day]
        rows.append(
            {
                "date": day.isoformat(),
                "total": len(on_day),
                "completed": sum(j["status"] == "completed" for j in on_day),
                "failed": sum(j["status"] == "failed" for j in on_day),
                "cancelled": sum(j["status"] == "cancelled" for j in on_day),
            }
        )
    return rows


# --- helpers ---------------------------------------------------------------------------


def fetch_stats(client: FlaskClient, auth: dict[str, str], query: str = "?fresh=true") -> dict[str, Any]:
    response = client.get(f"/admin/jobs/stats{query}", headers=auth)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz)


def earlier_today(tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """A moment today (in tz) that is already past, whatever the time of day."""
    now = now or datetime.now(UTC)
    midnight = start_of_day(local_day(now, tz), tz)
    return midnight + min(timedelta(minutes=5), (now - midnight) / 2)


def noon(days_ago: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(local_day(datetime.now(UTC), tz) - timedelta(days=days_ago), time(12), tzinfo=tz)


# --- overview --------------------------------------------------------------------------


def test_overview_counts_every_status_and_reads_queue_as_queued(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC)
    jobs = []
    for status, n in (("queued", 2), ("queue", 3), ("processing", 1), ("completed", 6), ("failed", 2), ("cancelled", 1)):
        for i in range(n):
            created = now - timedelta(hours=2, minutes=i)
            extra: dict[str, Any] = {}
            if status == "completed":
                extra = {
                    "processing_started_at": created + timedelta(seconds=30),
                    "completed_at": created + timedelta(seconds=90 + 30 * i),
                }
            jobs.append(data.job(status=status, created_at=created, **extra))

    overview = fetch_stats(client, auth)["data"]["overview"]

    expected = {key: sum(ALIAS.get(j["status"], j["status"]) == key for j in jobs) for key in STATUS_KEYS}
    assert expected["queued"] == 5  # the old service reported 0 here when writers said `queue`
    for key in STATUS_KEYS:
        assert overview[key] == expected[key], key
    assert overview["total"] == len(jobs) == 15
    assert overview["successRate"] == pytest.approx(100 * 6 / (6 + 2), abs=0.01)
    times = [processing_seconds(j) for j in jobs if processing_seconds(j) is not None]
    assert overview["avgProcessingTimeMinutes"] == f"{sum(times) / len(times) / 60:.2f}"
    assert re.fullmatch(r"\d+\.\d{2}", overview["avgProcessingTimeMinutes"])


def test_success_rate_counts_only_finished_jobs(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    for status in ("completed", "failed", "failed", "cancelled", "queued", "processing"):
        data.job(status=status)

    overview = fetch_stats(client, auth)["data"]["overview"]

    # 1 of 3 finished jobs succeeded; cancelled and unfinished jobs do not count either way.
    assert overview["successRate"] == pytest.approx(33.33, abs=0.01)


def test_empty_database_gives_zeros_not_errors(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    body = fetch_stats(client, auth)
    stats = body["data"]

    # No capture leader keeps counts in an in-process app: counted now, and said so.
    assert stats["overview"].pop("countsBasis")["method"] == "counted"
    assert stats["overview"] == {
        "total": 0,
        "queued": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "successRate": 0,
        "avgProcessingTimeMinutes": "0.00",
    }
    assert stats["today"]["total"] == stats["today"]["completed"] == stats["today"]["failed"] == 0
    perf = stats["performance"]
    assert perf["sampleSize"] == 0
    assert perf["avgProcessingTimeSeconds"] is None
    assert perf["avgProcessingTimeMinutes"] == "0.00"
    assert perf["processingTimeSeconds"] == {"avg": None, "p50": None, "p95": None, "p99": None}
    assert perf["queueWaitSeconds"] == {"avg": None, "p50": None, "p95": None, "p99": None}
    assert perf["oldestQueuedJobAgeSeconds"] is None
    assert len(stats["dailyMetrics"]) == 7
    assert all(row["total"] == 0 for row in stats["dailyMetrics"])
    assert stats["resourceUtilization"] == {}


def test_success_rate_is_zero_when_nothing_finished(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    data.job(status="queued")
    data.job(status="processing", processing_started_at=datetime.now(UTC))

    overview = fetch_stats(client, auth)["data"]["overview"]

    assert overview["successRate"] == 0
    assert overview["queued"] == 1 and overview["processing"] == 1


# --- today -----------------------------------------------------------------------------


def test_today_counts_jobs_created_today(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    utc = ZoneInfo("UTC")
    jobs = [
        data.job(status="completed", created_at=earlier_today(utc), completed_at=datetime.now(UTC)),
        data.job(status="completed", created_at=earlier_today(utc), completed_at=datetime.now(UTC)),
        data.job(status="failed", created_at=earlier_today(utc)),
        data.job(status="queue", created_at=earlier_today(utc)),
        # Yesterday's jobs, even if they finished today, are not today's.
        data.job(status="completed", created_at=noon(1, utc), completed_at=datetime.now(UTC)),
        data.job(status="failed", created_at=noon(1, utc)),
    ]

    stats = fetch_stats(client, auth)["data"]
    computed_at = parse_ts(stats["computedAt"])
    today = local_day(computed_at, utc)
    todays = [j for j in jobs if local_day(j["created_at"], utc) == today]

    assert stats["today"]["date"] == today.isoformat()
    assert stats["today"]["timezone"] == "UTC"
    assert stats["today"]["total"] == len(todays)
    assert stats["today"]["completed"] == sum(j["status"] == "completed" for j in todays)
    assert stats["today"]["failed"] == sum(j["status"] == "failed" for j in todays)
    assert stats["today"]["total"] >= 4  # the fixture really put jobs into today


def test_today_and_daily_metrics_follow_stats_timezone(database_url: str, engine: Any, auth: dict[str, str], data: Data) -> None:
    # UTC+14: a local day starts at 10:00 UTC of the previous UTC day, so a UTC day and a
    # local day always disagree about one of two jobs a minute either side of local midnight.
    zone = "Pacific/Kiritimati"
    tz = ZoneInfo(zone)
    now = datetime.now(UTC)
    midnight = start_of_day(local_day(now, tz), tz)
    before = data.job(status="completed", created_at=midnight - timedelta(minutes=1), completed_at=now)
    after = data.job(status="failed", created_at=midnight + min(timedelta(minutes=1), (now - midnight) / 2))
    jobs = [before, after]

    local_app = create_app(make_settings(database_url, env={"STATS_TIMEZONE": zone}), engine)
    local = fetch_stats(local_app.test_client(), auth)["data"]
    utc_app = create_app(make_settings(database_url), engine)
    in_utc = fetch_stats(utc_app.test_client(), auth)["data"]

    local_today = local_day(parse_ts(local["computedAt"]), tz)
    assert local["today"]["timezone"] == zone
    assert local["today"]["date"] == local_today.isoformat()
    assert {k: local["today"][k] for k in ("total", "completed", "failed")} == {"total": 1, "completed": 0, "failed": 1}
    assert local["dailyMetrics"] == expected_daily(jobs, local_today, tz)
    assert local["dailyMetrics"][-1]["date"] == local_today.isoformat()
    assert local["dailyMetrics"][-2]["completed"] == 1

    utc = ZoneInfo("UTC")
    utc_today = local_day(parse_ts(in_utc["computedAt"]), utc)
    utc_todays = [j for j in jobs if local_day(j["created_at"], utc) == utc_today]
    assert in_utc["today"]["total"] == len(utc_todays) != 1
    assert in_utc["dailyMetrics"] == expected_daily(jobs, utc_today, utc)


# --- performance -----------------------------------------------------------------------


def test_performance_percentiles_match_percentile_cont(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC)
    jobs = []
    # Completed jobs in the window with uneven processing times and queue waits.
    runs = [37, 45, 61, 64, 90, 122, 150, 175, 240, 333, 1801]
    waits = [1, 2, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    for i, (run, wait) in enumerate(zip(runs, waits, strict=True)):
        created = now - timedelta(hours=1 + i, minutes=7)
        started = created + timedelta(seconds=wait, milliseconds=250 * i)
        jobs.append(
            data.job(
                status="completed",
                created_at=created,
                processing_started_at=started,
                completed_at=started + timedelta(seconds=run, milliseconds=130 * i),
            )
        )
    # Completed without processing_started_at: processing time counts from creation.
    created = now - timedelta(hours=3)
    jobs.append(data.job(status="completed", created_at=created, completed_at=created + timedelta(seconds=500)))
    # Failed and running jobs waited in the queue too, but have no processing time.
    jobs.append(
        data.job(
            status="failed",
            created_at=now - timedelta(hours=5),
            processing_started_at=now - timedelta(hours=5) + timedelta(seconds=400),
        )
    )
    jobs.append(
        data.job(
            status="processing",
            created_at=now - timedelta(minutes=30),
            processing_started_at=now - timedelta(minutes=30) + timedelta(seconds=144),
        )
    )
    # Outside the 24 h window: must not move any figure of the window.
    old = now - timedelta(hours=30)
    jobs.append(
        data.job(
            status="completed",
            created_at=old,
            processing_started_at=old + timedelta(seconds=9000),
            completed_at=old + timedelta(seconds=99000),
        )
    )

    stats = fetch_stats(client, auth)["data"]
    perf = stats["performance"]
    computed_at = parse_ts(stats["computedAt"])
    window_start = computed_at - timedelta(hours=24)
    in_window = [j for j in jobs if j["created_at"] >= window_start]
    times = [t for j in in_window if (t := processing_seconds(j)) is not None]
    waits_s = [w for j in in_window if (w := queue_wait_seconds(j)) is not None]
    assert len(times) == 12 and len(waits_s) == 13

    assert perf["window"]["hours"] == 24
    assert parse_ts(perf["window"]["end"]) == computed_at
    assert parse_ts(perf["window"]["start"]) == window_start
    assert perf["sampleSize"] == len(times)
    avg = sum(times) / len(times)
    assert isinstance(perf["avgProcessingTimeSeconds"], int)
    assert perf["avgProcessingTimeSeconds"] == round(avg)
    assert perf["avgProcessingTimeMinutes"] == f"{avg / 60:.2f}" == stats["overview"]["avgProcessingTimeMinutes"]
    for name, values in (("processingTimeSeconds", times), ("queueWaitSeconds", waits_s)):
        figures = perf[name]
        assert figures["avg"] == pytest.approx(sum(values) / len(values), abs=0.006), name
        for key, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert figures[key] == pytest.approx(percentile_cont(values, fraction), abs=0.006), (name, key)
    assert perf["processingTimeSeconds"]["p99"] > perf["processingTimeSeconds"]["p95"] > perf["processingTimeSeconds"]["p50"]


def test_oldest_queued_job_age_includes_queue_alias(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC)
    data.job(status="queued", created_at=now - timedelta(hours=3))
    oldest = data.job(status="queue", created_at=now - timedelta(hours=50, seconds=17))  # also outside the window
    data.job(status="processing", created_at=now - timedelta(hours=80), processing_started_at=now - timedelta(hours=79))
    data.job(status="failed", created_at=now - timedelta(hours=90))

    stats = fetch_stats(client, auth)["data"]
    perf = stats["performance"]
    computed_at = parse_ts(stats["computedAt"])

    assert parse_ts(perf["oldestQueuedJobCreatedAt"]) == oldest["created_at"]
    assert perf["oldestQueuedJobAgeSeconds"] == pytest.approx((computed_at - oldest["created_at"]).total_seconds(), abs=0.011)


# --- daily metrics ---------------------------------------------------------------------


def test_daily_metrics_cover_exactly_seven_calendar_days(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    utc = ZoneInfo("UTC")
    now = datetime.now(UTC)
    today = local_day(now, utc)
    jobs = [
        # The boundary the old service got wrong: the day before the 7-day range is out...
        data.job(status="completed", created_at=start_of_day(today - timedelta(days=6), utc) - timedelta(seconds=1)),
        data.job(status="failed", created_at=noon(8, utc)),
        # ...the first second of the range is in.
        data.job(status="completed", created_at=start_of_day(today - timedelta(days=6), utc) + timedelta(seconds=1)),
        data.job(status="cancelled", created_at=noon(6, utc)),
        data.job(status="failed", created_at=noon(4, utc)),
        data.job(status="failed", created_at=noon(4, utc)),
        data.job(status="queued", created_at=noon(4, utc)),
        data.job(status="completed", created_at=noon(1, utc)),
        data.job(status="completed", created_at=earlier_today(utc, now)),
        data.job(status="processing", created_at=earlier_today(utc, now)),
    ]

    stats = fetch_stats(client, auth)["data"]
    daily = stats["dailyMetrics"]
    stats_today = local_day(parse_ts(stats["computedAt"]), utc)

    assert len(daily) == 7
    assert [row["date"] for row in daily] == [(stats_today - timedelta(days=d)).isoformat() for d in range(6, -1, -1)]
    assert daily == expected_daily(jobs, stats_today, utc)
    for row in daily:
        assert set(row) == {"date", "total", "completed", "failed", "cancelled"}
        for key in ("total", "completed", "failed", "cancelled"):
            assert type(row[key]) is int, (row, key)
    assert sum(row["total"] for row in daily) == len(jobs) - 2
    assert [row["total"] for row in daily].count(0) >= 2  # zero-filled gaps are present


# --- resource utilization --------------------------------------------------------------


def test_resource_utilization_is_the_newest_row_of_each_metric(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # The newest rows go in first; older rows written afterwards must not replace them.
    data.metric("cpu_usage", 41.5, now - timedelta(minutes=1), {"unit": "percent", "host": "w1"})
    data.metric("memory_usage", 63.25, now - timedelta(minutes=2), {"unit": "percent"})
    data.metric("cpu_usage", 99.0, now - timedelta(hours=1), {"unit": "percent", "host": "old"})
    data.metric("cpu_usage", 12.0, now - timedelta(days=2))
    data.metric("memory_usage", 10.0, now - timedelta(minutes=3))
    data.metric("queue_size", 7, now - timedelta(minutes=30), {"unit": "jobs"})
    data.metric("queue_size", 3, now - timedelta(minutes=5), {"unit": "jobs"})

    resources = fetch_stats(client, auth)["data"]["resourceUtilization"]

    assert set(resources) == {"cpu_usage", "memory_usage", "queue_size"}
    assert resources["cpu_usage"]["value"] == 41.5
    assert resources["cpu_usage"]["data"] == {"unit": "percent", "host": "w1"}
    assert parse_ts(resources["cpu_usage"]["recorded_at"]) == now - timedelta(minutes=1)
    assert resources["memory_usage"]["value"] == 63.25
    assert parse_ts(resources["memory_usage"]["recorded_at"]) == now - timedelta(minutes=2)
    assert resources["queue_size"]["value"] == 3
    assert isinstance(resources["queue_size"]["value"], (int, float))


# --- sharing and parameters ------------------------------------------------------------


def test_shared_figures_within_interval_and_fresh_recomputes(
    database_url: str, engine: Any, auth: dict[str, str], data: Data
) -> None:
    app = create_app(make_settings(database_url, env={"JOB_STATS_INTERVAL_MS": "600000"}), engine)
    client = app.test_client()
    data.job(status="completed", completed_at=datetime.now(UTC))

    first = fetch_stats(client, auth, "")
    data.job(status="failed")
    second = fetch_stats(client, auth, "")

    assert second["data"]["computedAt"] == first["data"]["computedAt"]
    assert "shared" in second["message"]
    assert second["data"]["overview"]["total"] == 1  # the shared figures, not recomputed

    fresh = fetch_stats(client, auth, "?fresh=true")
    assert parse_ts(fresh["data"]["computedAt"]) > parse_ts(first["data"]["computedAt"])
    assert "shared" not in fresh["message"]
    assert fresh["data"]["overview"]["total"] == 2
    assert fresh["data"]["overview"]["failed"] == 1

    # Everyone else now gets the recomputed figures.
    after = fetch_stats(client, auth, "")
    assert after["data"]["computedAt"] == fresh["data"]["computedAt"]


def test_unknown_query_parameter_is_named_in_a_400(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    response = client.get("/admin/jobs/stats?fresh=true&refresh=1", headers=auth)

    assert response.status_code == 400
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in body["error"]["details"]] == ["refresh"]


def test_bad_fresh_value_is_a_400(client: FlaskClient, auth: dict[str, str], data: Data) -> None:
    response = client.get("/admin/jobs/stats?fresh=perhaps", headers=auth)

    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "fresh"


def test_stats_need_an_admin_token(client: FlaskClient, data: Data) -> None:
    response = client.get("/admin/jobs/stats?fresh=true")

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"
