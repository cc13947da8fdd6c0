"""Acting from the dashboard in Debian's Chromium (Playwright): an operator retries a failed job
from its dialog and every failed job the filters match (dry-run count, typed confirmation, reason,
live progress bar), the Actions panel lists both; a viewer is offered neither. The whole loop
runs: the owner consumer re-queues the jobs on the real RabbitMQ."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.actions.test_loop import owner_of
from tests.support.factories import Data, utcnow
from tests.support.rabbitmq import Owner
from tests.support.service import RunningService, run_service
from tests.support.tokens import token_for
from tests.test_dashboard import ENV, screenshot, sign_in

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def acting_service(database_url: str, clean: Data, amqp_url: str, tmp_path: Path) -> Iterator[tuple[RunningService, Owner]]:
    tag = uuid.uuid4().hex[:8]
    env = {**ENV, "ACTION_AMQP_URL": amqp_url, "ACTION_AMQP_EXCHANGE": f"test-{tag}", "ACTION_AMQP_ROUTING_KEY": f"retry.{tag}"}
    with owner_of(amqp_url, database_url, env) as owner, run_service(database_url, tmp_path, env=env) as svc:
        yield svc, owner


def failed_jobs(data: Data, n: int) -> list[dict[str, Any]]:
    return [data.job(status="failed", error_message="model timed out", created_at=utcnow()) for _ in range(n)]


def open_job(page: Page, job: dict[str, Any]) -> None:
    page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"] .cell-job button').click()
    expect(page.locator("#job-dialog")).to_be_visible()


def test_an_operator_retries_one_job_and_all_that_match(
    acting_service: tuple[RunningService, Owner], clean: Data, operator: dict[str, Any], open_page: Any
) -> None:
    svc, owner = acting_service
    one, *others = failed_jobs(clean, 4)
    clean.job(status="completed", created_at=utcnow())
    page = open_page(svc.url).page
    sign_in(page, svc.url, token_for(operator))
    expect(page.locator("#role")).to_contain_text("operator")

    open_job(page, one)
    page.locator("#retry-job").click()
    expect(page.locator("#retry-status")).to_contain_text("Say why first")
    page.locator("#retry-reason").fill("model fixed")
    page.locator("#retry-job").click()
    expect(page.locator("#retry-status")).to_contain_text("Retry requested")
    entry = page.locator(".timeline .action-entry")
    expect(entry).to_contain_text("model fixed", timeout=20_000)
    expect(entry).to_contain_text("picked up", timeout=20_000)
    page.locator("#job-dialog-close").click()

    page.locator("#f-status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    page.locator("#bulk-start").click()
    expect(page.locator("#bulk-summary")).to_contain_text("3 jobs match these filters; 3 of them failed")
    confirm = page.locator("#bulk-confirm")
    expect(confirm).to_be_disabled()
    page.locator("#bulk-confirm-text").fill("3")
    expect(confirm).to_be_disabled()  # a reason is required too
    page.locator("#bulk-reason").fill("queue restored")
    expect(confirm).to_be_enabled()
    confirm.click()
    expect(page.locator("#bulk-progress-text")).to_contain_text("3 of 3 picked up", timeout=30_000)
    expect(page.locator("#bulk-progress progress")).to_have_attribute("value", "3")
    rows = page.locator("#actions-body tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".action-reason")).to_have_text("queue restored")
    expect(rows.nth(1).locator(".action-reason")).to_have_text("model fixed")
    screenshot(page, "dashboard-actions.png")
    assert {job["id"] for job in [one, *others]} == set(owner.requeued)


def test_a_viewer_is_offered_no_action(acting_service: tuple[RunningService, Owner], clean: Data, open_page: Any) -> None:
    svc, _ = acting_service
    job = failed_jobs(clean, 1)[0]
    viewer = clean.user(user_type="admin")
    page = open_page(svc.url).page
    sign_in(page, svc.url, token_for(viewer))
    expect(page.locator("#role")).to_contain_text(re.compile("viewer"))

    open_job(page, job)
    expect(page.locator("#job-dialog-body")).to_contain_text("Timeline")

    expect(page.locator("#retry-job")).to_have_count(0)
    expect(page.locator("#bulk-retry")).to_be_hidden()
    expect(page.locator("#actions-panel")).to_be_visible()
