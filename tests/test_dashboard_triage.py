"""The dashboard's failure triage and trends in Debian's Chromium (Playwright), against the
service under gunicorn: the failures panel (groups, counts, sparklines, a click filtering the
jobs table by signature), the range picker driving the trend charts. Expected figures come
from SQL of this test's own. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine, text

from tests import test_dashboard as dashboard
from tests.support.factories import Data, utcnow
from tests.support.service import RunningService, run_service
from tests.support.tokens import token_for
from tests.test_dashboard import ENV, Watched, screenshot, sign_in

# The browser fixtures of the dashboard's own tests (one Chromium per module, watched pages).
browser = dashboard.browser
board = dashboard.board
open_page = dashboard.open_page

pytestmark = pytest.mark.timeout(180)

TIMEOUT_FAMILY = "Model timeout after <num> ms on job <uuid>"
PAYLOAD_FAMILY = "Invalid payload <str> at <path>"


@pytest.fixture
def failures(board: Data, admin: dict[str, Any]) -> dict[str, Any]:
    """Failed jobs of two causes over the last 20 days, and jobs of the other statuses."""
    now = utcnow()
    for i in range(14):
        board.job(
            status="failed",
            created_at=now - timedelta(days=i % 10, hours=1 + i),
            error_message=f"Model timeout after {30_000 + i} ms on job {uuid.uuid4()}",
            assessment_name="AI-Based IQ Test",
        )
    for i in range(5):
        board.job(
            status="failed",
            created_at=now - timedelta(days=2 * i, hours=3),
            error_message=f"Invalid payload 'answer{i}' at /srv/inbox/{i}.json",
            assessment_name="Custom Assessment",
        )
    for i in range(30):
        started = now - timedelta(days=i % 20, hours=2, minutes=i)
        board.job(
            status="completed",
            created_at=started - timedelta(seconds=20 + i),
            processing_started_at=started,
            completed_at=started + timedelta(seconds=60 + 5 * i),
        )
    board.job(status="queued", created_at=now - timedelta(minutes=3))
    return {"token": token_for(admin), "now": now}


@pytest.fixture
def service(database_url: str, failures: dict[str, Any], tmp_path: Any) -> Iterator[RunningService]:
    with run_service(database_url, tmp_path, env=ENV) as running:
        yield running


def midnight_days_ago(days: int) -> datetime:
    return datetime.combine(utcnow().date() - timedelta(days=days), time.min, tzinfo=UTC)


def failed_ids(engine: Engine, prefix: str, since: datetime) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM archive.analysis_jobs WHERE status = 'failed' AND error_message LIKE :p AND created_at >= :s"),
            {"p": prefix + "%", "s": since},
        )
        return {str(row.id) for row in rows}


def created_since(engine: Engine, since: datetime) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM archive.analysis_jobs WHERE created_at >= :s"), {"s": since}).scalar_one()
        )


def test_failures_panel_groups_and_filters_the_table(
    service: RunningService,
    failures: dict[str, Any],
    open_page: Callable[..., Watched],
    engine: Engine,
) -> None:
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, failures["token"])

    # The 7-day preset: whole days (UTC here) from the day 7 days ago.
    since = midnight_days_ago(7)
    timeouts, payloads = failed_ids(engine, "Model timeout", since), failed_ids(engine, "Invalid payload", since)
    assert len(timeouts) > len(payloads) > 0
    groups = page.locator("#failures li.failure")
    expect(groups).to_have_count(2)
    expect(groups.nth(0)).to_have_attribute("data-signature", TIMEOUT_FAMILY)
    expect(groups.nth(0)).to_have_attribute("data-count", str(len(timeouts)))
    expect(groups.nth(1)).to_have_attribute("data-signature", PAYLOAD_FAMILY)
    expect(groups.nth(1)).to_have_attribute("data-count", str(len(payloads)))
    expect(page.locator("#failures-summary")).to_contain_text(f"{len(timeouts) + len(payloads)} failed jobs in 2 groups")
    # One sparkline per group, a point per day of the range (8 days).
    expect(page.locator("#failures svg.sparkline polyline")).to_have_count(2)
    points = page.locator("#failures svg.sparkline polyline").first.get_attribute("points") or ""
    assert len(points.split()) == 8
    screenshot(page, "dashboard-triage-1280.png")

    # A group filters the table to exactly its jobs, its signature shown as a removable chip.
    groups.nth(1).get_by_role("button", name="Show these jobs in the table").click()
    expect(page.locator("#f-signature code")).to_have_text(PAYLOAD_FAMILY)
    expect(page.locator("#f-status")).to_have_value("failed")
    rows = page.locator("#jobs-body tr[data-job-id]")
    expect(rows).to_have_count(len(payloads))
    assert {rows.nth(i).get_attribute("data-job-id") for i in range(len(payloads))} == payloads
    page.get_by_role("button", name="Remove the error signature filter").click()
    expect(page.locator("#f-signature")).to_have_count(0)
    expect(page.locator("#jobs-summary")).to_contain_text(f"{len(timeouts) + len(payloads)} jobs")  # still failed, 7 days


def test_range_picker_drives_the_trend_charts(
    service: RunningService,
    failures: dict[str, Any],
    open_page: Callable[..., Watched],
    engine: Engine,
) -> None:
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, failures["token"])
    trends = page.locator("#trends")
    # 7 d by hour: 7 x 24 hours from the hour 7 days ago, through the current hour.
    expect(trends).to_have_attribute("data-bucket", "hour")
    expect(trends).to_have_attribute("data-points", "169")

    page.get_by_role("button", name="30 d").click()
    expect(trends).to_have_attribute("data-bucket", "day")
    expect(trends).to_have_attribute("data-points", "31")
    expect(page.locator("#trends-summary")).to_contain_text(f"{created_since(engine, midnight_days_ago(30))} jobs created")
    # Throughput bars stack by status; the three line charts have a line.
    expect(page.locator("#trend-throughput rect.bar-stack-failed").first).to_be_visible()
    for chart in ("trend-failure-rate", "trend-processing", "trend-queue-wait"):
        expect(page.locator(f"#{chart} path.trend-line")).to_have_count(1)
    expect(page.locator("#failures li.failure")).to_have_count(2)  # the panel follows the range

    page.get_by_role("button", name="24 h").click()
    expect(trends).to_have_attribute("data-points", "25")
    expect(page.locator("#failures-summary")).to_contain_text("failed jobs")

    page.get_by_role("button", name="Custom").click()
    today = utcnow().date()
    page.locator("#range-from").fill((today - timedelta(days=13)).isoformat())
    page.locator("#range-to").fill(today.isoformat())
    page.get_by_role("button", name="Show", exact=True).click()
    expect(trends).to_have_attribute("data-bucket", "day")
    expect(trends).to_have_attribute("data-points", "14")
    expect(page.locator("#trends-summary")).to_contain_text(f"{created_since(engine, midnight_days_ago(13))} jobs created")
    # A reversed custom range is refused on the page, not sent.
    page.locator("#range-from").fill(today.isoformat())
    page.locator("#range-to").fill((today - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#range-error")).to_be_visible()


def test_triage_on_a_phone_screen(service: RunningService, failures: dict[str, Any], open_page: Callable[..., Watched]) -> None:
    watched = open_page(service.url, width=390, height=844)
    page = watched.page
    sign_in(page, service.url, failures["token"])
    expect(page.locator("#failures li.failure")).to_have_count(2)
    expect(page.locator("#trend-throughput svg")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width}px"
    screenshot(page, "dashboard-triage-390.png")
