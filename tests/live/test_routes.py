"""The event log over REST: a job's timeline and the alerts (listed as they were streamed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine

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
