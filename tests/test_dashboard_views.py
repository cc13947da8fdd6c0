"""The dashboard's search box, multi-status filter, assessment choices from the data, the view
kept in the address bar, paging by cursor forward and back, the Export button, dark mode and the alert banner's human figures:
in Debian's Chromium through Playwright, against the service under gunicorn and a real
PostgreSQL (the fixtures and helpers of tests/test_dashboard.py). Screenshots go to
tests/artifacts/."""

# The fixtures imported from tests/test_dashboard.py are parameters here by name (F811).
# ruff: noqa: F811
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.factories import utcnow
from tests.support.service import RunningService
from tests.test_dashboard import (  # noqa: F401  (fixtures: pytest finds them by name in this module)
    Watched,
    api,
    board,
    browser,
    open_page,
    screenshot,
    seeded,
    service,
    sign_in,
)

pytestmark = pytest.mark.timeout(180)


def total(page: Any) -> str:
    return page.locator("#jobs-summary").get_attribute("data-total") or ""


def test_search_box_and_several_statuses(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    token = seeded["token"]
    page = open_page(service.url).page
    sign_in(page, service.url, token)
    summary = page.locator("#jobs-summary")
    rows = page.locator("#jobs-body tr")

    # The search box matches error messages (and assessment names, users, job ids).
    expected = api(service, token, "/jobs", search="TIMED OUT", limit=100)
    assert 0 < expected["pagination"]["total"] < 36
    page.get_by_label("Search").fill("TIMED OUT")
    page.get_by_label("Search").press("Enter")
    expect(summary).to_have_attribute("data-total", str(expected["pagination"]["total"]))
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"failed"}

    # Several statuses at once.
    page.get_by_role("button", name="Clear").click()
    expect(summary).to_have_attribute("data-total", "36")
    expected = api(service, token, "/jobs", status="failed,cancelled", limit=100)["pagination"]["total"]
    page.get_by_label("Status").select_option(["failed", "cancelled"])
    expect(summary).to_have_attribute("data-total", str(expected))
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"failed", "cancelled"}
    screenshot(page, "dashboard-multi-status.png")


def test_assessment_choices_come_from_the_data(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    seeded["data"].job(assessment_name="Zeta Personality 2027")
    page = open_page(service.url).page
    sign_in(page, service.url, seeded["token"])
    names = api(service, seeded["token"], "/jobs/assessment-names")["names"]
    assert "Zeta Personality 2027" in names
    options = page.locator("#assessment-names option")
    expect(options).to_have_count(len(names))
    assert options.evaluate_all("options => options.map(o => o.value)") == names


def test_the_view_is_kept_in_the_address_bar_and_restored(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    token = seeded["token"]
    page = open_page(service.url).page
    sign_in(page, service.url, token)
    page.get_by_label("Status").select_option(["completed", "failed"])
    page.get_by_label("Assessment name").fill("iq")
    page.get_by_label("Assessment name").press("Enter")
    page.locator("th[data-sort=priority]").get_by_role("button").click()
    expect(page.locator("th[data-sort=priority]")).to_have_attribute("aria-sort", "descending")
    expected = api(service, token, "/jobs", status="completed,failed", assessment_name="iq")["pagination"]["total"]
    expect(page.locator("#jobs-summary")).to_have_attribute("data-total", str(expected))
    page.wait_for_function("() => location.search.includes('sort_by=priority')")
    query = dict(re.findall(r"([a-z_]+)=([^&]*)", page.url.split("?", 1)[1]))
    assert query == {"status": "completed%2Cfailed", "assessment_name": "iq", "sort_by": "priority"}
    shown = page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")

    # A reload (the tab keeps its token) shows the same view.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#jobs-summary")).to_have_attribute("data-total", str(expected))
    assert page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)") == shown
    expect(page.get_by_label("Assessment name")).to_have_value("iq")
    assert page.get_by_label("Status").evaluate("s => [...s.selectedOptions].map(o => o.value)") == ["completed", "failed"]
    expect(page.locator("th[data-sort=priority]")).to_have_attribute("aria-sort", "descending")

    # The link, opened in another browser and signed in there, shows it too.
    other = open_page(service.url).page
    other.goto(page.url)
    other.get_by_label("Admin token").fill(token)
    other.get_by_role("button", name="Sign in").click()
    expect(other.locator("#jobs-summary")).to_have_attribute("data-total", str(expected))
    assert other.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)") == shown


def test_pages_go_forward_by_cursor_and_back_and_a_deep_page_reloads(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    token = seeded["token"]
    now = utcnow()
    for i in range(30):  # 66 jobs: pages of 25, 25 and 16
        seeded["data"].job(status="completed", created_at=now - timedelta(days=8, minutes=i))
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, token)
    ids = "rows => rows.map(r => r.dataset.jobId)"
    rows = page.locator("#jobs-body tr")
    info = page.locator("#page-info")
    expected = [[job["id"] for job in api(service, token, "/jobs", limit=25, page=n)["jobs"]] for n in (1, 2, 3)]
    assert [len(p) for p in expected] == [25, 25, 16]
    expect(info).to_have_text("Page 1 of 3")
    assert rows.evaluate_all(ids) == expected[0]
    lists = lambda: [u for u in watched.requests if "/admin/jobs?" in u]  # noqa: E731

    # Forward: each Next asks for the page after the last row (a cursor), never an offset.
    for n in (2, 3):
        before = len(lists())
        page.get_by_role("button", name="Next →").click()
        expect(info).to_have_text(f"Page {n} of 3")
        assert rows.evaluate_all(ids) == expected[n - 1]
        (request,) = lists()[before:]
        assert "cursor=" in request and "page=" not in request, request
    expect(page.get_by_role("button", name="Next →")).to_be_disabled()
    page.wait_for_function("() => location.search.includes('page=3') && location.search.includes('cursor=')")

    # Back: the cursors kept on the way, then page 1 by itself.
    page.get_by_role("button", name="← Previous").click()
    expect(info).to_have_text("Page 2 of 3")
    assert rows.evaluate_all(ids) == expected[1]
    assert "cursor=" in lists()[-1]
    page.get_by_role("button", name="← Previous").click()
    expect(info).to_have_text("Page 1 of 3")
    assert rows.evaluate_all(ids) == expected[0]
    assert "cursor=" not in lists()[-1] and "page=1&" in lists()[-1]
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.wait_for_function("() => !location.search.includes('cursor=') && !location.search.includes('page=')")

    # A deep page's link reloads that page (by its cursor); Previous from there goes by number.
    page.get_by_role("button", name="Next →").click()
    expect(info).to_have_text("Page 2 of 3")
    page.get_by_role("button", name="Next →").click()
    expect(info).to_have_text("Page 3 of 3")
    page.wait_for_function("() => location.search.includes('page=3')")
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(info).to_have_text("Page 3 of 3")
    assert rows.evaluate_all(ids) == expected[2]
    assert "cursor=" in lists()[-1]
    page.get_by_role("button", name="← Previous").click()
    expect(info).to_have_text("Page 2 of 3")
    assert rows.evaluate_all(ids) == expected[1]
    assert "page=2" in lists()[-1]

    # A changed sort starts again at page 1 (the cursors were the old order's).
    page.locator("th[data-sort=priority]").get_by_role("button").click()
    expect(info).to_have_text("Page 1 of 3")
    page.wait_for_function("() => !location.search.includes('cursor=')")


def test_export_downloads_exactly_what_the_table_shows(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched], tmp_path: Path
) -> None:
    token = seeded["token"]
    page = open_page(service.url).page
    sign_in(page, service.url, token)
    page.get_by_label("Status").select_option(["completed", "queued"])
    page.locator("th[data-sort=priority]").get_by_role("button").click()
    page.locator("th[data-sort=priority]").get_by_role("button").click()
    expect(page.locator("th[data-sort=priority]")).to_have_attribute("aria-sort", "ascending")
    listed = api(service, token, "/jobs", status="completed,queued", sort_by="priority", sort_order="ASC", limit=100)
    expect(page.locator("#jobs-summary")).to_have_attribute("data-total", str(listed["pagination"]["total"]))
    shown = page.locator("#jobs-body tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"jobs_queued-completed_by-priority-asc_\d{8}T\d{6}Z\.csv", download.suggested_filename)
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    exported = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    ids = [row["id"] for row in exported]
    assert ids == [job["id"] for job in listed["jobs"]]  # every matching job, in the table's order
    assert ids[: len(shown)] == shown  # starting with the page the table shows
    assert {row["status"] for row in exported} == {"completed", "queued"}
    expect(page.locator("#export-status")).to_have_text(f"Downloaded {download.suggested_filename}.")


def test_dark_mode_follows_the_system_setting(service: RunningService, seeded: dict[str, Any], browser: Any) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC", color_scheme=scheme
        )
        try:
            page = context.new_page()
            sign_in(page, service.url, seeded["token"])
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            panel = page.evaluate("getComputedStyle(document.querySelector('.jobs-panel')).backgroundColor")
            text_color = page.evaluate("getComputedStyle(document.body).color")
            if scheme == "dark":
                assert panel == "rgb(24, 32, 43)" and text_color == "rgb(228, 233, 240)"
                screenshot(page, "dashboard-dark.png")
        finally:
            context.close()
    assert backgrounds == {"light": "rgb(244, 246, 249)", "dark": "rgb(15, 20, 27)"}


def test_alert_banners_read_in_human_figures(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    page = open_page(service.url).page
    sign_in(page, service.url, seeded["token"])
    # The seeded processing jobs started days ago: a processing_timeout episode (threshold 1800 s).
    banner = page.locator('#alerts .alert[data-type="processing_timeout"]')
    expect(banner).to_have_count(1, timeout=15_000)
    message = banner.locator(".alert-message").inner_text()
    assert "for more than 30 min" in message and "1800s" not in message
    # The ISO instant in the message, and the banner's own time, as local dates and times.
    assert re.search(r"oldest started [A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}\s[AP]M\)", message), message
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}\s[AP]M", banner.locator("time").inner_text())
