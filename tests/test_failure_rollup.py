"""The closed days (jobs/days.py) and the failure groups kept beside them (triage/rollup.py):
answers from rolled-up days are the jobs table's answers (failure groups and the stats' daily
series), a captured change to a job of a closed day shows at once, and a change that lands
while its day is being rebuilt leaves the day to be rebuilt again.

Expected figures come from the jobs table (tests/test_failures.py's own SQL, SQL of this
module, and the service's answer with CLOSED_DAYS=0, which reads every day from the jobs table)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import Engine, event, text

from admin_service.config import Settings
from admin_service.jobs.days import PASS_DAYS, Maintainer
from admin_service.triage.rollup import FailureRollup
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.live import ENV, EXACT_MODE, drop_trigger, install_change_capture, wait_log, wait_until
from tests.support.service import RunningService, run_service
from tests.support.settings import app_with
from tests.support.tokens import token_for
from tests.test_failures import FAMILIES, expected_groups, local_midnight, message, seed

# What differs between two computations of the same figures.
VOLATILE = ("computedAt", "shared", "rollup")


def build(engine: Engine, settings: Settings, tz: ZoneInfo, keep_days: int = 92) -> None:
    """Roll up every closed day (as the leader's loop does, pass after pass)."""
    rollup = FailureRollup(settings.admin_schema)
    maintainer = Maintainer(rollup.days, [rollup.rebuild_day], engine, tz, keep_days, 3600, 30_000)
    while maintainer.run_pass(datetime.now(UTC)) == PASS_DAYS:
        pass


def answers(database_url: str, engine: Engine, auth: dict[str, str], query: str, **env: Any) -> tuple[dict, dict]:
    """(with the rollup, read from the jobs table alone) for one query."""
    got = []
    for days in ("92", "0"):
        client = app_with(database_url, engine, CLOSED_DAYS=days, **env).test_client()
        response = client.get(f"/admin/jobs/failures{query}&fresh=true", headers=auth)
        assert response.status_code == 200, response.get_json()
        got.append(response.get_json()["data"])
    return got[0], got[1]


def same_figures(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k not in VOLATILE} == {k: v for k, v in b.items() if k not in VOLATILE}


def test_rolled_up_days_answer_as_the_jobs_table_does(
    database_url: str, engine: Engine, settings: Settings, auth: dict[str, str], data: Data
) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    # Ties on created_at across days and groups: the newest message and samples are chosen alike.
    tied = now - timedelta(days=3, hours=2)
    for i in range(4):
        data.job(status="failed", created_at=tied, error_message=message("timeout", 200 + i), assessment_name="Tied")
    build(engine, settings, ZoneInfo("UTC"))
    today = now.date()
    for query in (
        "?limit=20",  # the default range: the last 7 days
        f"?from={today - timedelta(days=9)}&to={today}",
        f"?from={today - timedelta(days=9)}&to={today - timedelta(days=2)}",  # closed days only
        f"?from={today - timedelta(days=89)}&to={today}&limit=2&page=2",
        f"?from={today - timedelta(days=9)}&to={today}&assessment_name=iq",
    ):
        rolled, table = answers(database_url, engine, auth, query)
        assert rolled["rollup"]["days"] >= 1 and table["rollup"]["days"] == 0, query
        assert rolled["rollup"]["days"] + rolled["rollup"]["liveDays"] == rolled["range"]["days"]
        assert same_figures(rolled, table), query
    # And against the test's own SQL: counts, first/last seen, days.
    first = today - timedelta(days=9)
    rolled, _ = answers(database_url, engine, auth, f"?from={first}&to={today}")
    expected = expected_groups(engine, local_midnight(first, UTC), local_midnight(today + timedelta(days=1), UTC), "UTC")
    by_signature = {FAMILIES[f][1] if f in FAMILIES else "<none>": g for f, g in expected.items()}
    for group in rolled["groups"]:
        want = by_signature[group["signature"]]
        assert group["count"] == want["count"]
        assert {d["date"]: d["count"] for d in group["perDay"] if d["count"]} == want["perDay"]
        assert datetime.fromisoformat(group["firstSeen"].replace("Z", "+00:00")) == want["firstSeen"]
        assert set(group["sampleJobIds"]) <= want["ids"]


def daily_counts(engine: Engine, tz: str, days: int = 7) -> list[dict[str, Any]]:
    """The stats' daily series by the test's own SQL: jobs created per local day, by status now."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d::date AS day, count(j.id) AS total, count(j.id) FILTER (WHERE j.status = 'completed') AS completed, "
                "count(j.id) FILTER (WHERE j.status = 'failed') AS failed, "
                "count(j.id) FILTER (WHERE j.status = 'cancelled') AS cancelled "
                "FROM generate_series((now() AT TIME ZONE :tz)::date - (:days - 1), (now() AT TIME ZONE :tz)::date, '1 day') AS d "
                "LEFT JOIN archive.analysis_jobs j ON (j.created_at AT TIME ZONE :tz)::date = d::date GROUP BY 1 ORDER BY 1"
            ),
            {"tz": tz, "days": days},
        )
        return [
            {"date": r.day.isoformat(), **{k: int(getattr(r, k)) for k in ("total", "completed", "failed", "cancelled")}}
            for r in rows
        ]


def test_the_stats_daily_series_from_closed_days(
    database_url: str, engine: Engine, settings: Settings, auth: dict[str, str], data: Data
) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    for i in range(12):
        data.job(status=("completed", "cancelled", "queued")[i % 3], created_at=now - timedelta(hours=9 * i + 1))
    build(engine, settings, ZoneInfo("UTC"))
    for days in ("92", "0"):
        client = app_with(database_url, engine, CLOSED_DAYS=days).test_client()
        body = client.get("/admin/jobs/stats?fresh=true", headers=auth).get_json()
        assert body["data"]["dailyMetrics"] == daily_counts(engine, "UTC"), days


def test_days_of_another_time_zone_are_not_read(
    database_url: str, engine: Engine, settings: Settings, auth: dict[str, str], data: Data
) -> None:
    now = datetime.now(UTC)
    seed(data, now)
    build(engine, settings, ZoneInfo("UTC"))
    zone = "Pacific/Kiritimati"  # UTC+14: none of its days is a UTC day
    today = now.astimezone(ZoneInfo(zone)).date()
    query = f"?from={today - timedelta(days=6)}&to={today}"
    rolled, table = answers(database_url, engine, auth, query, STATS_TIMEZONE=zone)
    assert rolled["rollup"]["days"] == 0 and same_figures(rolled, table)
    build(engine, settings, ZoneInfo(zone))
    rolled, table = answers(database_url, engine, auth, query, STATS_TIMEZONE=zone)
    assert rolled["rollup"]["days"] == 6 and same_figures(rolled, table)


def test_a_change_during_a_rebuild_leaves_the_day_dirty(
    database_url: str, engine: Engine, settings: Settings, auth: dict[str, str], data: Data
) -> None:
    """Capture marks a day between the rebuild's read of the day's state and its aggregate:
    whether or not the aggregate saw the change, the rebuild must not call the day clean."""
    now = datetime.now(UTC)
    created = now - timedelta(days=2)
    job = data.job(status="failed", created_at=created, error_message="boom 1")
    rollup = FailureRollup(settings.admin_schema)
    build(engine, settings, ZoneInfo("UTC"))

    def mark_once(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "failed_jobs" in statement and not marked:
            marked.append(True)
            # Another connection, as capture's: the job retried and its change logged.
            with engine.begin() as other:
                other.execute(text("UPDATE archive.analysis_jobs SET status = 'queued' WHERE id = :id"), {"id": job["id"]})
                rollup.days.mark(other.connection.dbapi_connection.cursor(), [created])  # type: ignore[union-attr]

    marked: list[bool] = []
    with engine.begin() as conn:
        rollup.days.mark(conn.connection.dbapi_connection.cursor(), [created])  # type: ignore[union-attr]
    event.listen(engine, "before_cursor_execute", mark_once)
    try:
        build(engine, settings, ZoneInfo("UTC"))
    finally:
        event.remove(engine, "before_cursor_execute", mark_once)
    assert marked
    with engine.connect() as conn:
        clean = rollup.days.clean_days(conn, ZoneInfo("UTC"), created.date(), created.date())
    assert clean == {}, "the day was called clean though a change was marked after its state was read"
    rolled, table = answers(database_url, engine, auth, f"?from={created.date()}&to={created.date()}")
    assert rolled["totalFailures"] == table["totalFailures"] == 0
    build(engine, settings, ZoneInfo("UTC"))
    rolled, table = answers(database_url, engine, auth, f"?from={created.date()}&to={created.date()}")
    assert rolled["rollup"]["days"] == 1 and rolled["totalFailures"] == 0


def test_no_day_is_read_while_nobody_marks_them(
    database_url: str, engine: Engine, settings: Settings, auth: dict[str, str], data: Data
) -> None:
    """A capture leader that does not mark days (an older version, during a rolling upgrade)
    lets the loop's lease lapse: no day is read meanwhile, and the loop that takes the lease
    over rebuilds every day before any is read again."""
    now = datetime.now(UTC)
    seed(data, now)
    build(engine, settings, ZoneInfo("UTC"))
    query = f"?from={(now - timedelta(days=9)).date()}&to={now.date()}"
    rolled, _ = answers(database_url, engine, auth, query)
    assert rolled["rollup"]["days"] == 9
    schema = settings.admin_schema
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE \"{schema}\".closed_days_lease SET until = now() - interval '1 second'"))
        # A failed job of a closed day retried, with nobody marking its day.
        conn.execute(
            text(
                "UPDATE archive.analysis_jobs SET status = 'queued' WHERE id = (SELECT id FROM archive.analysis_jobs "
                "WHERE status = 'failed' AND created_at < date_trunc('day', now()) - interval '1 day' LIMIT 1)"
            )
        )
    rolled, table = answers(database_url, engine, auth, query)
    assert rolled["rollup"]["days"] == 0 and same_figures(rolled, table)
    stats = app_with(database_url, engine).test_client().get("/admin/jobs/stats?fresh=true", headers=auth).get_json()
    assert stats["data"]["dailyMetrics"] == daily_counts(engine, "UTC")
    build(engine, settings, ZoneInfo("UTC"))
    rolled, table = answers(database_url, engine, auth, query)
    assert rolled["rollup"]["days"] == 9 and same_figures(rolled, table)


# --- the service as deployed: the capture leader marks, its loop rebuilds ----------------------


@pytest.fixture
def ten_days(data: Data, admin: dict[str, Any], engine: Engine, settings: Settings) -> Iterator[dict[str, Any]]:
    reset_event_log(engine, settings)
    now = datetime.now(UTC)
    seed(data, now)
    yield {"token": token_for(admin), "now": now, "first": (now - timedelta(days=9)).date(), "today": now.date()}


def failures(svc: RunningService, case: dict[str, Any]) -> dict[str, Any]:
    response = requests.get(
        f"{svc.url}/admin/jobs/failures",
        params={"from": str(case["first"]), "to": str(case["today"]), "fresh": "true"},
        headers={"Authorization": f"Bearer {case['token']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def closed_job(engine: Engine, days_ago: int) -> dict[str, Any]:
    """A failed job of a closed day, with its family's signature."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, error_message FROM archive.analysis_jobs WHERE status = 'failed' AND created_at < :before "
                "AND error_message LIKE 'timeout%' ORDER BY created_at DESC LIMIT 1"
            ),
            {"before": datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago - 1)},
        ).one()
    return {"id": str(row.id), "message": row.error_message}


def rolled_up(svc: RunningService, case: dict[str, Any]) -> dict[str, Any]:
    return wait_until(lambda: (d := failures(svc, case))["rollup"]["days"] == 9 and d, 30, "the nine closed days rolled up")


def check_exact(svc: RunningService, case: dict[str, Any], engine: Engine) -> dict[str, Any]:
    data = failures(svc, case)
    start, end = local_midnight(case["first"], UTC), local_midnight(case["today"] + timedelta(days=1), UTC)
    expected = expected_groups(engine, start, end, "UTC")
    got = {g["signature"]: g["count"] for g in data["groups"]}
    assert got == {FAMILIES[f][1] if f in FAMILIES else "<none>": g["count"] for f, g in expected.items()}
    return data


def test_a_retried_failure_of_a_closed_day_leaves_its_group_at_once(
    database_url: str, engine: Engine, settings: Settings, ten_days: dict[str, Any], tmp_path: Path
) -> None:
    """Polling capture: the retry (failed -> queued) is logged, its day marked, served from the
    jobs table until rebuilt, then from the rollup again, exact throughout."""
    drop_trigger(engine, settings)
    with run_service(database_url, tmp_path, env=ENV) as svc:
        before = rolled_up(svc, ten_days)
        check_exact(svc, ten_days, engine)
        job = closed_job(engine, 3)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE archive.analysis_jobs SET status = 'queued', updated_at = now() WHERE id = :id"), {"id": job["id"]}
            )
        after = wait_until(
            lambda: (d := failures(svc, ten_days))["totalFailures"] == before["totalFailures"] - 1 and d, 15, "the retry seen"
        )
        check_exact(svc, ten_days, engine)
        assert job["id"] not in {i for g in after["groups"] for i in g["sampleJobIds"]}
        rebuilt = rolled_up(svc, ten_days)
        assert rebuilt["totalFailures"] == before["totalFailures"] - 1
        check_exact(svc, ten_days, engine)
        # The stats' daily series, its closed days from the same rows, says the same.
        stats = requests.get(
            f"{svc.url}/admin/jobs/stats",
            params={"fresh": "true"},
            headers={"Authorization": f"Bearer {ten_days['token']}"},
            timeout=10,
        ).json()["data"]
        assert stats["dailyMetrics"] == daily_counts(engine, "UTC")


def test_exact_capture_sees_a_message_edited_on_a_closed_day(
    database_url: str, engine: Engine, settings: Settings, ten_days: dict[str, Any], tmp_path: Path
) -> None:
    """A failed job stays failed but its message changes (polling cannot see that; exact
    capture does): the job moves to its new group."""
    install_change_capture(engine, settings)
    try:
        with run_service(database_url, tmp_path, env=ENV) as svc:
            wait_log(svc, EXACT_MODE)
            rolled_up(svc, ten_days)
            job = closed_job(engine, 2)
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE archive.analysis_jobs SET error_message = 'Disk full on /var/tmp/x1' WHERE id = :id"),
                    {"id": job["id"]},
                )
            moved = wait_until(
                lambda: (
                    (d := failures(svc, ten_days)) and any(g["signature"] == "Disk full on <path>" for g in d["groups"]) and d
                ),
                15,
                "the edited message's group",
            )
            (group,) = [g for g in moved["groups"] if g["signature"] == "Disk full on <path>"]
            assert group["count"] == 1 and group["sampleJobIds"] == [job["id"]]
            rolled_up(svc, ten_days)
            data = failures(svc, ten_days)
            assert any(g["signature"] == "Disk full on <path>" and g["count"] == 1 for g in data["groups"])
    finally:
        drop_trigger(engine, settings)
