"""The event log over REST: a job's timeline and the alerts (listed as they were streamed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, text

from tests.support.factories import Data
from tests.support.live import ENV, JOB_UPDATE, UPDATES_ONLY, Jobs, for_job
from tests.support.service import RunningService, run_service
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for


def test_a_jobs_timeline_lists_its_events_oldest_first(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        job, other = jobs.insert(), jobs.insert()
        client.wait_for(for_job(job), 5)
        jobs.set_status(job, "processing")
        client.wait_for(for_job(job, "updated"), 5)
        jobs.set_status(job, "completed")
        client.wait_for(for_job(job, "completed"), 5)
    streamed = [e for e in client.events if for_job(job)(e)]
    for ref in (job["id"], job["job_id"]):
        response = requests.get(f"{service.url}/admin/jobs/{ref}/events", headers=bearer(token), timeout=5)
        assert response.status_code == 200, response.text
        events = response.json()["data"]["events"]
        assert [e["kind"] for e in events] == ["created", "updated", "completed"]
        assert [e["id"] for e in events] == [e.int_id for e in streamed]
        assert [e["payload"] for e in events] == [e.data for e in streamed], "what subscribers received"
        assert {e["event"] for e in events} == {JOB_UPDATE}
        assert other["id"] not in json.dumps(events)
    missing = requests.get(f"{service.url}/admin/jobs/{uuid.uuid4()}/events", headers=bearer(token), timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert requests.get(f"{service.url}/admin/jobs/{job['id']}/events", timeout=5).status_code == 401


def test_alerts_are_streamed_and_listed(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with (
        run_service(database_url, tmp_path, env={**ENV, "ALERT_QUEUE_MAX": "2"}) as svc,
        SSEClient(svc.url, token=token, params={"events": "job-alert"}) as client,
    ):
        for _ in range(3):
            jobs.insert()
        alert = client.wait_for(lambda e: e.name == "job-alert", 8, "the queue_overflow alert")
        assert alert.data["type"] == "queue_overflow"
        assert alert.data["severity"] in ("low", "medium", "high", "critical")
        assert alert.data["data"]["queued"] == 3
        assert alert.id is not None
        assert client.collect(2.5) == [], "raised once per episode, not on every evaluation"

        for params in ({}, {"type": "queue_overflow"}):
            response = requests.get(f"{svc.url}/admin/jobs/alerts", params=params, headers=bearer(token), timeout=5)
            assert response.status_code == 200, response.text
            listed = response.json()["data"]["events"]
            assert [(e["id"], e["kind"], e["payload"]) for e in listed] == [(alert.int_id, "queue_overflow", alert.data)]
        other = requests.get(
            f"{svc.url}/admin/jobs/alerts", params={"type": "processing_timeout"}, headers=bearer(token), timeout=5
        )
        assert other.json()["data"]["events"] == []
        bad = requests.get(f"{svc.url}/admin/jobs/alerts", params={"type": "bogus"}, headers=bearer(token), timeout=5)
        assert bad.status_code == 400


def timeline(svc: RunningService, token: str, job_id: str) -> list[dict[str, Any]]:
    response = requests.get(f"{svc.url}/admin/jobs/{job_id}/events", headers=bearer(token), timeout=5)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


def steps(events: list[dict[str, Any]]) -> list[tuple[str, str | None, bool, str]]:
    return [(e["kind"], e["status"], e["derived"], e["source"]) for e in events]


def test_a_job_older_than_the_log_shows_what_its_row_proves(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    with engine.begin() as conn:  # finished a day ago, before the service logged anything
        done, failed = (
            conn.execute(
                text(
                    """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, error_message, retry_count,
                           created_at, processing_started_at, completed_at, updated_at)
                       VALUES (gen_random_uuid(), 'old-done', gen_random_uuid(), 'completed', NULL, 2,
                               now() - interval '25 hours', now() - interval '24 hours', now() - interval '23 hours',
                               now() - interval '23 hours'),
                              (gen_random_uuid(), 'old-failed', gen_random_uuid(), 'failed', 'Model timeout', 0,
                               now() - interval '25 hours', NULL, NULL, now() - interval '22 hours')
                       RETURNING id::text"""
                )
            )
            .scalars()
            .all()
        )
    events = timeline(service, token, done)
    assert steps(events) == [
        ("created", "queued", True, "created_at"),
        ("processing", "processing", True, "processing_started_at"),
        ("completed", "completed", True, "completed_at"),
    ]
    assert [e["id"] for e in events] == [None, None, None]
    assert events[1]["payload"] == {"retry_count": 2}
    assert events[0]["occurred_at"] < events[1]["occurred_at"] < events[2]["occurred_at"]
    failed_events = timeline(service, token, "old-failed")
    assert steps(failed_events) == [("created", "queued", True, "created_at"), ("failed", "failed", True, "updated_at")]
    assert failed_events[1]["payload"] == {"error_message": "Model timeout"}

    # Reopened by its owner: the logged event follows the steps the row proved before it.
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        jobs.set_status({"id": done}, "queued")
        client.wait_for(for_job({"id": done}), 5, "the reopened job's event")
    assert steps(timeline(service, token, done)) == [
        ("created", "queued", True, "created_at"),
        ("processing", "processing", True, "processing_started_at"),
        ("updated", "queued", False, "event-log"),
    ]


def test_a_step_that_polling_merged_is_shown_derived_and_logged_steps_are_not_repeated(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        job = jobs.insert()
        client.wait_for(for_job(job, "created"), 5)
        with engine.begin() as conn:  # started and finished in one transaction: one sampled change
            conn.execute(
                text("UPDATE archive.analysis_jobs SET status = 'processing', processing_started_at = now() WHERE id = :id"),
                job,
            )
            conn.execute(
                text(
                    "UPDATE archive.analysis_jobs SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = :id"
                ),
                job,
            )
        client.wait_for(for_job(job, "completed"), 5)
    events = timeline(service, token, job["id"])
    assert steps(events) == [
        ("created", "queued", False, "event-log"),
        ("processing", "processing", True, "processing_started_at"),
        ("completed", "completed", False, "event-log"),
    ]
    assert all(isinstance(e["id"], int) for e in events if not e["derived"])
