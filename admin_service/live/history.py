"""A job's full timeline: the steps its row itself proves, merged with every logged event.

The log knows a job from when capture first saw it (and polling merges changes that come
quickly), so a job older than the log would show nothing, and a merged step would be missing.
The row proves some steps on its own: it was created (`created_at`, queued), it started
(`processing_started_at`, with `retry_count` retries so far), and it ended (its terminal status
at `completed_at`, or at `updated_at` for a failed or cancelled job without one: its last change
is the one that closed it). Those steps are shown marked `derived` with the column they come
from, unless a logged event already shows them; logged events keep their log order, each
derived step goes before the first logged event that happened after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from admin_service.jobs.status import TERMINAL
from admin_service.names import JOB_ACTION, JOB_UPDATE

LOGGED = "event-log"  # the source of a logged event
ACTION_LOG = "action-log"  # the source of an operator's action on the job
CREATED = "created"


def derived_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps the job's row proves, oldest first (`job` as jobs.serialize.job_of gives it)."""
    steps = [_step(CREATED, "queued", job["created_at"], "created_at", {})]
    if job["processing_started_at"] is not None:
        retries = {"retry_count": job["retry_count"]} if job["retry_count"] else {}
        steps.append(_step("processing", "processing", job["processing_started_at"], "processing_started_at", retries))
    status = job["status"]
    if status in TERMINAL:
        source = "completed_at" if job["completed_at"] is not None else "updated_at"
        steps.append(
            _step(status, status, job[source], source, {"error_message": job["error_message"]} if job["error_message"] else {})
        )
    return steps


def _step(kind: str, status: str, at: datetime, source: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": None,
        "event": JOB_UPDATE,
        "kind": kind,
        "status": status,
        "occurred_at": at,
        "payload": details,
        "derived": True,
        "source": source,
    }


def _covers(event: dict[str, Any], step: dict[str, Any]) -> bool:
    """Whether a logged event already shows this step."""
    if event["event"] != JOB_UPDATE:
        return False
    if step["kind"] == CREATED:
        return bool(event["kind"] == CREATED)
    return bool(event["status"] == step["status"])


def _happened_at(event: dict[str, Any]) -> datetime:
    """When a logged change happened: the job's updated_at in it (the log's own time is later)."""
    stamp = (event["payload"].get("job") or {}).get("updated_at") if event["event"] == JOB_UPDATE else None
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp)
        except ValueError:
            pass
    occurred: datetime = event["occurred_at"]
    return occurred


def full_timeline(job: dict[str, Any], logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Derived steps no logged event shows, merged by time into the logged events (log order)."""
    events = [{**event, "derived": False, "source": LOGGED} for event in logged]
    missing = [step for step in derived_steps(job) if not any(_covers(event, step) for event in events)]
    merged: list[dict[str, Any]] = []
    for event in events:
        at = _happened_at(event)
        while missing and missing[0]["occurred_at"] <= at:
            merged.append(missing.pop(0))
        merged.append(event)
    return merged + missing


def action_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An operator's action on the job (actions/store.py for_job rows) as timeline entries: who
    asked, why, and what became of the job's item."""
    return [
        {
            "id": None,
            "event": JOB_ACTION,
            "kind": f"{row['kind']}-requested",
            "status": None,
            "occurred_at": row["created_at"],
            "payload": {
                "action_id": str(row["action_id"]),
                "reason": row["reason"],
                "requested_by": {"id": str(row["requested_by"]), "email": row["requested_by_email"], "user_type": row["role"]},
                "item": {
                    "id": str(row["item_id"]),
                    "state": row["state"],
                    "reason": row["item_reason"],
                    "attempts": row["attempts"],
                    "last_error": row["last_error"],
                    "sent_at": row["sent_at"],
                    "picked_up_at": row["picked_up_at"],
                    "picked_up_status": row["picked_up_status"],
                    "overdue_at": row["overdue_at"],
                },
            },
            "derived": False,
            "source": ACTION_LOG,
        }
        for row in rows
    ]


def with_actions(timeline: list[dict[str, Any]], actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The action entries placed by time among the job's steps (each before the first step that
    happened after it was requested)."""
    merged: list[dict[str, Any]] = []
    pending = sorted(actions, key=lambda entry: entry["occurred_at"])
    for entry in timeline:
        at = _happened_at(entry) if entry["source"] == LOGGED else entry["occurred_at"]
        while pending and pending[0]["occurred_at"] <= at:
            merged.append(pending.pop(0))
        merged.append(entry)
    return merged + pending
