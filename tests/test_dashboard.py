"""The live dashboard page in a real browser: Debian's Chromium driven by Playwright, against
the service under gunicorn on a real port and a real PostgreSQL.

Checks what an admin sees: sign-in (and clear messages for bad, expired and non-admin
tokens), status cards equal to what the API says, the 7-day chart, a job changed in the
database reaching the feed, the table and the cards within 2 s without a reload, the alert
banner, filters/sorting/paging, the job details dialog, resume after a lost connection, and
a phone-sized screen. Every page is also checked for CSP violations, script errors and
requests to any other origin. Screenshots go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine, text

from admin_service.config import Settings, load_settings
from tests.support import ROOT
from tests.support.factories import Data, utcnow
from tests.support.service import RunningService, run_service
from tests.support.tokens import token_for

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "tests" / "artifacts"
ENV = {
    "CAPTURE_POLL_MS": "100",
    "TAIL_POLL_MS": "200",
    "JOB_STATS_INTERVAL_MS": "500",
    "CAPTURE_OVERLAP_S": "3",
    "SSE_HEARTBEAT_S": "1",
    "SSE_RETRY_MS": "300",
}
ASSESSMENTS = ("AI-Driven Talent Mapping", "AI-Based IQ Test", "Custom Assessment")
STATUS_CYCLE = ("completed", "completed", "failed", "queued", "processing", "cancelled", "completed")
STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
# Collects what the page's CSP refused, before any of the page's own code runs.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.isfile(CHROMIUM), f"{CHROMIUM} is missing: `make test-tools` installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def board(engine: Engine, data: Data, settings: Settings) -> Data:
    """Empty archive tables and an empty event log (the database is shared by all tests)."""
    schema = settings.admin_schema
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'TRUNCATE "{schema}".job_events, "{schema}".capture_state, "{schema}".alert_state, '
            f'"{schema}".alert_deliveries, "{schema}".alert_episodes'
        )
    return data


@pytest.fixture
def seeded(board: Data, admin: dict[str, Any]) -> dict[str, Any]:
    """36 jobs of two users over the last 6 days, in every status, three with a result."""
    alice = board.user(email="alice@example.com", username="alice")
    bob = board.user(email="bob@example.org", username="bob")
    now = utcnow()
    jobs = []
    for i in range(36):
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        # Whole days plus 2 h: no job sits on the edge of the 24 h performance window.
        created = now - timedelta(days=i % 6, hours=2, minutes=i)
        fields: dict[str, Any] = {"updated_at": created}
        if status in ("completed", "failed", "processing"):
            fields["processing_started_at"] = created + timedelta(seconds=20 + i)
            fields["updated_at"] = fields["processing_started_at"]
        if status in ("completed", "failed"):
            fields["completed_at"] = fields["processing_started_at"] + timedelta(seconds=30 + 7 * i)
            fields["updated_at"] = fields["completed_at"]
        if status == "failed":
            fields.update(error_message="model timed out", retry_count=1)
        if status == "cancelled":
            fields["updated_at"] = created + timedelta(minutes=1)
        jobs.append(
            board.job(
                user=alice if i % 2 else bob,
                status=status,
                created_at=created,
                assessment_name=ASSESSMENTS[i % 3],
                priority=i % 5,
                **fields,
            )
        )
    with_result = [j for j in jobs if j["status"] == "completed"][:3]
    for job in with_result:
        board.result(job)
    return {"jobs": jobs, "with_result": with_result, "admin": admin, "token": token_for(admin), "data": board}


@pytest.fixture
def service(database_url: str, seeded: dict[str, Any], tmp_path: Any) -> Iterator[RunningService]:
    with run_service(database_url, tmp_path, env=ENV) as running:
        yield running


class Watched:
    """A page and what went wrong on it: script errors, CSP refusals, requests elsewhere."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("request", self._request)
        page.add_init_script(CSP_PROBE)

    def _console(self, message: Any) -> None:
        # A refused token is an expected 401/403, which Chromium logs as a failed load.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def _request(self, request: Any) -> None:
        self.requests.append(request.url)
        if not (request.url.startswith(self.origin + "/") or request.url.startswith("data:")):
            self.foreign.append(request.url)

    def check(self) -> None:
        violations = self.page.evaluate("window.__cspViolations || []")
        assert violations == [], f"CSP refused: {violations}"
        assert self.errors == [], self.errors
        assert self.foreign == [], f"requests to other origins: {self.foreign}"


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    contexts = []
    watched: list[Watched] = []

    def _open(origin: str, width: int = 1280, height: int = 900) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC")
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = Watched(context.new_page(), origin)
        watched.append(page)
        return page

    yield _open
    try:
        for page in watched:
            page.check()
    finally:
        for context in contexts:
            context.close()


# --- helpers -------------------------------------------------------------------------------


def sign_in(page: Page, url: str, token: str) -> None:
    response = page.goto(f"{url}/admin/dashboard")
    assert response is not None and response.ok
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#main")).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def api(service: RunningService, token: str, path: str, **params: Any) -> dict[str, Any]:
    response = requests.get(f"{service.url}/admin{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def card(page: Page, name: str) -> Any:
    return page.locator(f"#card-{name}")


def card_value(page: Page, name: str) -> float:
    return float(card(page, name).get_attribute("data-value") or "nan")


def change_job(data: Data, job_id: str, status: str, **extra: Any) -> None:
    """Change a job as the platform's workers do: updated_at from the database clock."""
    sets = ", ".join(f"{k} = :{k}" for k in extra)
    completed = ", completed_at = now()" if status in ("completed", "failed") else ""
    data.execute(
        f"UPDATE archive.analysis_jobs SET status = :status, updated_at = now(){completed}{', ' + sets if sets else ''} WHERE id = :id",
        status=status,
        id=job_id,
        **extra,
    )


def newest_queued(data: Data, user: dict[str, Any]) -> dict[str, Any]:
    """A queued job newer than all seeded ones (so on the table's first page), older than capture's overlap."""
    return data.job(user=user, status="queued", created_at=utcnow() - timedelta(seconds=30), assessment_name="AI-Based IQ Test")


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# --- tests ---------------------------------------------------------------------------------


def test_page_is_self_contained_with_a_strict_csp(service: RunningService) -> None:
    page = requests.get(f"{service.url}/admin/dashboard", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert "<script>" not in page.text and " style=" not in page.text
    for asset in ("dashboard.js", "dashboard.css"):
        assert f"/admin/dashboard/assets/{asset}?v=" in page.text
        response = requests.get(f"{service.url}/admin/dashboard/assets/{asset}", timeout=5)
        assert response.status_code == 200 and response.headers["Cache-Control"].startswith("public")
    assert requests.get(f"{service.url}/admin/dashboard/assets/routes.py", timeout=5).status_code == 404
    assert requests.get(f"{service.url}/admin/dashboard/assets/..%2Froutes.py", timeout=5).status_code == 404


def test_sign_in_then_cards_and_chart_show_what_the_api_gives(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, seeded["token"])
    assert page.evaluate("sessionStorage.getItem('admin-service.dashboard.token')") == seeded["token"]
    expect(page.get_by_label("Admin token")).to_be_hidden()

    stats = api(service, seeded["token"], "/jobs/stats")
    overview, performance = stats["overview"], stats["performance"]
    assert overview["queued"] > 0 and overview["failed"] > 0  # the page has something to show
    for name in STATUSES:
        expect(card(page, name)).to_have_text(f"{overview[name]:,}")
        assert card_value(page, name) == overview[name]
    assert card_value(page, "success-rate") == pytest.approx(overview["successRate"])
    expect(card(page, "success-rate")).to_have_text(f"{overview['successRate']:.1f}%")
    assert card_value(page, "avg-processing") == pytest.approx(performance["processingTimeSeconds"]["avg"])
    assert card_value(page, "p95-processing") == pytest.approx(performance["processingTimeSeconds"]["p95"])
    assert card_value(page, "oldest-queued") == pytest.approx(performance["oldestQueuedJobAgeSeconds"], abs=5)
    expect(card(page, "oldest-queued")).to_contain_text(" d ")  # days, not raw seconds

    # 7 days x (total, completed, failed) bars, and the same figures as a table.
    expect(page.locator("#chart rect.bar")).to_have_count(21)
    daily = stats["dailyMetrics"]
    assert len(daily) == 7
    page.get_by_text("Show as a table").click()
    rows = page.locator("#chart-table tr")
    expect(rows).to_have_count(7)
    for index, day in enumerate(daily):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert cells == [f"{day['total']:,}", f"{day['completed']:,}", f"{day['failed']:,}", f"{day['cancelled']:,}"]
        total_bar = page.locator(f'#chart rect.bar-total[data-day="{day["date"]}"] title')
        assert total_bar.text_content() is not None and f": {day['total']:,} total" in (total_bar.text_content() or "")
    assert sum(d["total"] for d in daily) == 36

    # A reload keeps the session (sessionStorage), no second sign-in.
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#sign-in")).to_be_hidden()
    expect(card(page, "failed")).to_have_text(f"{overview['failed']:,}")

    # Signing out forgets the token.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('admin-service.dashboard.token')") is None


def test_job_changed_in_the_database_reaches_feed_table_and_cards_within_2_s(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    data: Data = seeded["data"]
    job = newest_queued(data, seeded["admin"])
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, seeded["token"])
    row = page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"]')
    expect(row).to_have_attribute("data-status", "queued")
    expect(card(page, "queued")).to_have_attribute(
        "data-value", str(api(service, seeded["token"], "/jobs/stats")["overview"]["queued"])
    )
    queued, completed = card_value(page, "queued"), card_value(page, "completed")
    page.evaluate("window.__sameDocument = true")

    change_job(data, job["id"], "completed", processing_started_at=utcnow() - timedelta(seconds=40))
    started = time.monotonic()
    feed_item = page.locator(f'#feed li[data-job-id="{job["id"]}"]')
    page.wait_for_function(
        """([id, queued, completed]) => {
             const item = document.querySelector(`#feed li[data-job-id="${id}"]`);
             return item && item.textContent.includes("completed")
               && Number(document.getElementById("card-queued").dataset.value) === queued
               && Number(document.getElementById("card-completed").dataset.value) === completed;
           }""",
        arg=[job["id"], queued - 1, completed + 1],
        timeout=2000,
        polling=50,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert page.evaluate("window.__sameDocument") is True  # no reload
    expect(feed_item.locator(".badge")).to_contain_text("completed")
    expect(row).to_have_attribute("data-status", "completed")  # the table row changed in place

    # The newest update comes first, and a failed job that used up its retries raises the banner.
    # Written as the platform writes a new job (stamped now): polling finds a new job by its
    # created_at, and one stamped minutes ago that closes before the next pass would never be seen.
    other = data.job(user=seeded["admin"], status="processing", created_at=utcnow(), retry_count=3, max_retries=3)
    change_job(data, other["id"], "failed", error_message="worker crashed")
    expect(page.locator("#feed li").first).to_have_attribute("data-job-id", other["id"], timeout=3000)
    banner = page.locator('#alerts .alert[data-type="retries_exhausted"]')
    expect(banner).to_have_count(1, timeout=3000)
    expect(banner).to_have_attribute("role", "alert")
    expect(banner).to_contain_text(f"Job {other['job_id']} failed after exhausting its retries (3/3)")
    expect(banner.locator(".alert-severity")).to_have_text("⚠ Medium")  # severity in words, not colour alone
    # The seeded processing jobs started days ago: the processing_timeout episode is shown once.
    expect(page.locator('#alerts .alert[data-type="processing_timeout"]')).to_have_count(1)
    screenshot(page, "dashboard-1280.png")
    banner.get_by_role("button", name="Dismiss alert").click()
    expect(banner).to_have_count(0)

    # A dismissed alert stays dismissed through a manual refresh, the only time stats are forced fresh.
    timeout_alert = page.locator('#alerts .alert[data-type="processing_timeout"]')
    timeout_alert.get_by_role("button", name="Dismiss alert").click()
    expect(timeout_alert).to_have_count(0)
    assert not [url for url in watched.requests if "fresh=" in url]
    with page.expect_response(lambda r: "/admin/jobs/alerts" in r.url) as alerts_loaded:
        with page.expect_response(lambda r: "/admin/jobs/stats?fresh=true" in r.url) as fresh:
            page.get_by_role("button", name="Refresh").click()
    assert fresh.value.ok and alerts_loaded.value.ok
    page.wait_for_timeout(300)
    expect(timeout_alert).to_have_count(0)


def test_filters_sorting_paging_and_job_details(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    token = seeded["token"]
    watched = open_page(service.url)
    page = watched.page
    sign_in(page, service.url, token)
    rows = page.locator("#jobs-body tr")
    summary = page.locator("#jobs-summary")

    # Paging: 36 jobs, 25 a page.
    expect(summary).to_have_attribute("data-total", "36")
    expect(rows).to_have_count(25)
    expect(page.locator("#page-info")).to_have_text("Page 1 of 2")
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#page-info")).to_have_text("Page 2 of 2")
    expect(rows).to_have_count(11)
    expect(page.get_by_role("button", name="Next →")).to_be_disabled()

    # Status filter (applies on change, back to page 1).
    failed_total = api(service, token, "/jobs", status="failed")["pagination"]["total"]
    page.get_by_label("Status").select_option("failed")
    expect(summary).to_have_attribute("data-total", str(failed_total))
    expect(rows).to_have_count(failed_total)
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"failed"}

    # Assessment name (partial, submitted with Enter) narrows further.
    expected = api(service, token, "/jobs", status="failed", assessment_name="iq")["pagination"]["total"]
    assert 0 < expected < failed_total
    page.get_by_label("Assessment name").fill("iq")
    page.get_by_label("Assessment name").press("Enter")
    expect(summary).to_have_attribute("data-total", str(expected))
    for text_ in page.locator("#jobs-body .cell-assessment").all_inner_texts():
        assert text_ == "AI-Based IQ Test"

    # Clear, then user email and a date range.
    page.get_by_role("button", name="Clear").click()
    expect(summary).to_have_attribute("data-total", "36")
    page.get_by_label("User email").fill("bob@")
    page.get_by_role("button", name="Apply").click()
    expect(summary).to_have_attribute("data-total", "18")
    assert set(page.locator("#jobs-body .cell-user").all_inner_texts()) == {"bob@example.org"}
    day = (utcnow() - timedelta(days=2, hours=2)).date().isoformat()
    expected = api(service, token, "/jobs", user_email="bob@", date_from=day, date_to=day)["pagination"]["total"]
    assert 0 < expected < 18
    page.get_by_label("Created from").fill(day)
    page.get_by_label("Created to").fill(day)
    page.get_by_role("button", name="Apply").click()
    expect(summary).to_have_attribute("data-total", str(expected))
    expect(rows).to_have_count(expected)

    # A date range the wrong way round: the API's message, shown by the form.
    page.get_by_label("Created from").fill("2030-01-02")
    page.get_by_label("Created to").fill("2030-01-01")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#filters-error")).to_be_visible()
    expect(page.locator("#filters-error")).to_contain_text("date")
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#filters-error")).to_be_hidden()
    expect(summary).to_have_attribute("data-total", "36")

    # Sorting by clicking a header (with the keyboard): priority high to low, then low to high.
    priority = page.locator("th[data-sort=priority]")
    priority.get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(priority).to_have_attribute("aria-sort", "descending")
    expect(page.locator("th[data-sort=created_at]")).to_have_attribute("aria-sort", "none")
    values = [int(v) for v in page.locator("#jobs-body .cell-priority").all_inner_texts()]
    assert values == sorted(values, reverse=True) and values[0] == 4
    priority.get_by_role("button").click()
    expect(priority).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#jobs-body .cell-priority").first).to_have_text("0")
    values = [int(v) for v in page.locator("#jobs-body .cell-priority").all_inner_texts()]
    assert values == sorted(values)

    # Click-through (keyboard): details, timeline and result of a job that has one.
    job = seeded["with_result"][0]
    completed_total = api(service, token, "/jobs", status="completed")["pagination"]["total"]
    page.get_by_label("Status").select_option("completed")
    expect(summary).to_have_attribute("data-total", str(completed_total))
    opener = page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"] .cell-job button')
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name=f"Job {job['job_id']}")).to_be_visible()
    expect(dialog.locator(".result-json")).to_contain_text("The Analyst")
    expect(dialog.get_by_role("heading", name="Timeline")).to_be_visible()
    # Finished before the service logged anything: the steps its row proves, marked as such.
    expect(dialog.locator(".timeline li.derived")).to_have_count(3)
    expect(dialog.locator(".timeline li.derived").first).to_contain_text("created")
    expect(dialog.locator(".timeline li.derived").first).to_contain_text("from the job's created_at")
    expect(dialog.locator(".timeline li.derived").last).to_contain_text("completed")
    expect(dialog).to_contain_text(job["id"])
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()

    # A job without a result says so; a live change shows in its timeline.
    data: Data = seeded["data"]
    fresh = newest_queued(data, seeded["admin"])
    page.get_by_label("Status").select_option([])
    page.locator(f'#jobs-body tr[data-job-id="{fresh["id"]}"] .cell-job button').click()
    expect(dialog.locator(".no-result")).to_have_text("No result for this job (yet).")
    change_job(data, fresh["id"], "processing", processing_started_at=utcnow())
    expect(dialog.locator(".timeline li.logged")).to_have_count(1, timeout=5000)
    expect(dialog.locator(".timeline li.logged")).to_contain_text("processing")
    expect(dialog.locator(".timeline li.derived")).to_have_count(1)  # its creation, older than the log
    page.get_by_role("button", name="Close job details").click()
    expect(dialog).to_be_hidden()


def test_bad_or_expired_tokens_show_a_clear_message(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    data: Data = seeded["data"]
    watched = open_page(service.url)
    page = watched.page
    page.goto(f"{service.url}/admin/dashboard")
    error = page.locator("#sign-in-error")
    token_input = page.get_by_label("Admin token")

    def try_token(token: str, message: str) -> None:
        token_input.fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(error).to_be_visible()
        expect(error).to_contain_text(message)
        expect(token_input).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#main")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('admin-service.dashboard.token')") is None

    refused = "This token was refused: it is invalid or has expired"
    try_token("not-a-token", "That is not a token")
    try_token(token_for(seeded["admin"], load_settings({"JWT_SECRET": "another-secret-of-another-service-0123456789"})), refused)
    try_token(token_for(seeded["admin"], ttl_seconds=-60), refused)
    try_token(token_for(data.user(user_type="user")), "not an active admin")

    # An expired token left in the tab's storage: straight to the sign-in form, with the reason.
    page.evaluate("t => sessionStorage.setItem('admin-service.dashboard.token', t)", token_for(seeded["admin"], ttl_seconds=-60))
    page.reload()
    expect(error).to_contain_text(refused)
    expect(page.locator("#main")).to_be_hidden()

    # A token that expires while the page is open ends the session with a message.
    token_input.fill(token_for(seeded["admin"], ttl_seconds=3))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#main")).to_be_visible()
    expect(error).to_contain_text("Your token expired", timeout=8000)
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")


def test_reconnect_resumes_from_the_last_event(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched], settings: Settings
) -> None:
    """Cut the browser's connections; a change logged while it is cut arrives only by resuming."""
    data: Data = seeded["data"]
    first = newest_queued(data, seeded["admin"])
    second = newest_queued(data, seeded["admin"])
    with CuttableProxy(service.port) as proxy:
        watched = open_page(proxy.url)
        page = watched.page
        sign_in(page, proxy.url, seeded["token"])
        change_job(data, first["id"], "processing", processing_started_at=utcnow())
        expect(page.locator(f'#feed li[data-job-id="{first["id"]}"]')).to_be_visible(timeout=3000)

        proxy.cut()
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=5000)
        expect(page.locator("#connection-text")).to_have_text("Reconnecting…")
        change_job(data, second["id"], "completed")
        logged = wait_for(lambda: event_logged(data, settings, second["id"]), 5, "the change in the event log")
        time.sleep(0.5)  # past the tail: the hub has published it, to no one
        expect(page.locator(f'#feed li[data-job-id="{second["id"]}"]')).to_have_count(0)

        proxy.restore()
        expect(page.locator("#connection")).to_have_attribute("data-state", "resumed", timeout=8000)
        expect(page.locator("#connection-text")).to_contain_text("resumed")
        item = page.locator(f'#feed li[data-job-id="{second["id"]}"]')
        expect(item).to_be_visible(timeout=3000)
        expect(item).to_contain_text("completed")
        assert int(page.evaluate("document.getElementById('connection-text').textContent.match(/event (\\d+)/)[1]")) < logged


def test_narrow_phone_screen(service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]) -> None:
    watched = open_page(service.url, width=390, height=844)
    page = watched.page
    # Signed in by a link: the token rides in the fragment (never sent), which is then removed.
    page.goto(f"{service.url}/admin/dashboard#token={seeded['token']}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert page.url == f"{service.url}/admin/dashboard"
    assert page.evaluate("sessionStorage.getItem('admin-service.dashboard.token')") == seeded["token"]
    expect(page.locator("#jobs-body tr")).to_have_count(25)
    # Nothing wider than the screen: the page never scrolls sideways (the table scrolls in its box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    cards = page.locator(".cards .card")
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert first and second and first["y"] == second["y"] and first["x"] < second["x"]  # two per row
    # Rows become cards: optional cells folded away, the sortable headers kept as sort buttons.
    expect(page.locator("#jobs-body .cell-updated").first).to_be_hidden()
    expect(page.locator("#jobs-body .cell-assessment").first).to_be_visible()
    page.locator("th[data-sort=status]").get_by_role("button").click()
    expect(page.locator("th[data-sort=status]")).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-status", "cancelled")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    chart = page.locator("#chart svg").bounding_box()
    assert chart and chart["width"] <= 390
    screenshot(page, "dashboard-390.png")
    # The details dialog fits the screen too.
    page.locator("#jobs-body .cell-job button").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Details")).to_be_visible()
    box = dialog.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390


# --- a proxy the test can cut ---------------------------------------------------------------


def event_logged(data: Data, settings: Settings, job_row_id: str) -> int | None:
    """The log id of the job's `completed` event, once capture has logged it."""
    with data.engine.connect() as conn:
        return conn.execute(
            text(f"SELECT max(id) FROM \"{settings.admin_schema}\".job_events WHERE job_row_id = :id AND status = 'completed'"),
            {"id": job_row_id},
        ).scalar()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class CuttableProxy:
    """TCP between the browser and the service. `cut()` drops every connection and refuses new
    ones (as a network outage does) until `restore()`; the service itself keeps running."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.blocked = threading.Event()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.thread = threading.Thread(target=self._accept, name=f"proxy-{uuid.uuid4().hex[:6]}", daemon=True)

    def __enter__(self) -> CuttableProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self._drop_all()
        self.thread.join(5)

    def cut(self) -> None:
        self.blocked.set()
        self._drop_all()

    def restore(self) -> None:
        self.blocked.clear()

    def _drop_all(self) -> None:
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        with self.lock:
            self.sockets.discard(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)


def test_an_operator_acknowledges_an_alert_and_its_resolution_stays_a_while(
    service: RunningService, seeded: dict[str, Any], open_page: Callable[..., Watched]
) -> None:
    """The seeded processing jobs started days ago: a processing_timeout episode is active."""
    data = seeded["data"]
    operator = data.user(user_type="superadmin", email="lead@example.com")
    viewer_page = open_page(service.url).page
    sign_in(viewer_page, service.url, seeded["token"])  # an admin: a viewer
    viewer_banner = viewer_page.locator('#alerts .alert[data-type="processing_timeout"]')
    expect(viewer_banner).to_have_count(1, timeout=5000)
    expect(viewer_banner.locator(".alert-state")).to_have_text("Active")
    expect(viewer_banner.get_by_role("button", name="Acknowledge alert")).to_have_count(0)

    page = open_page(service.url).page
    sign_in(page, service.url, token_for(operator))
    banner = page.locator('#alerts .alert[data-type="processing_timeout"]')
    expect(banner).to_have_count(1, timeout=5000)
    banner.get_by_role("button", name="Acknowledge alert").click()
    expect(banner.locator(".alert-state")).to_contain_text("Acknowledged by lead@example.com", timeout=3000)
    expect(banner).to_have_attribute("data-status", "acknowledged")
    expect(banner.get_by_role("button", name="Acknowledge alert")).to_have_count(0)
    # The viewer's page hears it live (alert:update), without a reload.
    expect(viewer_banner.locator(".alert-state")).to_contain_text("Acknowledged by lead@example.com", timeout=5000)
    screenshot(page, "dashboard-alert-acknowledged.png")

    for job in seeded["jobs"]:  # the stuck jobs finish: the rule clears, the episode resolves itself
        if job["status"] == "processing":
            change_job(data, job["id"], "completed")
    expect(banner).to_have_attribute("data-status", "resolved", timeout=15000)  # ALERT_INTERVAL_S: 10 s
    expect(banner.locator(".alert-severity")).to_have_text("✓ Resolved")
    expect(banner.locator(".alert-state")).to_contain_text("Cleared by itself after")
    page.wait_for_timeout(3000)
    expect(banner).to_have_count(1)  # kept a while (RESOLVED_KEEP_MS), not gone at once
