"""Resuming a stream with Last-Event-ID: the missed events replayed, or a reset event when they are gone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import logged_events
from tests.support.factories import Data
from tests.support.live import UPDATES_ONLY, Jobs, assert_no_duplicates, for_job, wait_until
from tests.support.service import RunningService
from tests.support.sse_client import SSEClient
from tests.support.tokens import token_for


def test_resume_after_a_disconnect_with_last_event_id(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        a, b = jobs.insert(), jobs.insert()
        client.wait_for(for_job(b), 5)
        last = client.events[-1]
        assert last.last_event_id == last.id
    # Disconnected: three changes happen meanwhile.
    c = jobs.insert()
    jobs.set_status(a, "processing")
    jobs.set_status(b, "failed", error_message="lost")

    def three_logged() -> list[tuple[int, str, str | None, dict[str, Any]]] | None:
        rows = logged_events(engine, settings, last.int_id)
        return rows if len(rows) == 3 else None

    missed = wait_until(three_logged, 5, "the three changes in the log")
    assert [row[2] for row in missed] == [c["id"], a["id"], b["id"]]

    def resume(**kwargs: Any) -> SSEClient:
        client = SSEClient(service.url, token=token, **kwargs)
        assert client.status == 200
        got = [client.next_event(5) for _ in range(3)]
        assert [e.int_id for e in got] == [row[0] for row in missed], "exactly the missed events, in order"
        assert [e.data for e in got] == [row[3] for row in missed]
        assert [e.data["event"] for e in got] == ["created", "updated", "failed"]
        return client

    by_header = resume(params=UPDATES_ONLY, last_event_id=last.id)
    by_query = resume(params={**UPDATES_ONLY, "last_event_id": last.id})
    with by_header, by_query:
        d = jobs.insert()
        for client in (by_header, by_query):
            live_event = client.next_event(5)
            assert for_job(d)(live_event), "then live events"
            client.collect(1.0)
            assert_no_duplicates(client.events)
            assert len(client.events) == 4


def test_resume_from_a_pruned_id_gets_a_reset_event(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        for _ in range(3):
            client.wait_for(for_job(jobs.insert()), 5)
    first, second, third = (e.int_id for e in client.events)
    with engine.begin() as conn:  # as the hourly prune does, for events up to `second`
        conn.exec_driver_sql(f'DELETE FROM "{settings.admin_schema}".job_events WHERE id <= %(i)s', {"i": second})
        conn.exec_driver_sql(f'UPDATE "{settings.admin_schema}".capture_state SET pruned_through = %(i)s', {"i": second})

    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=first) as gap:
        reset = gap.next_event(5)
        assert reset.name == "reset"
        assert reset.id is None
        assert reset.data["lastEventId"] >= third
        job = jobs.insert()
        after = gap.next_event(5)
        assert for_job(job)(after), "no stale replay after a reset: live events follow"
    # Resuming from the newest pruned id itself loses nothing: a normal replay.
    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=second) as ok:
        assert ok.next_event(5).int_id == third


def test_resume_from_an_id_this_log_never_had_gets_a_reset_event(
    service: RunningService, live: Data, admin: dict[str, Any], engine: Engine
) -> None:
    """A Last-Event-ID beyond the log (the log was recreated or restored, or the id came from
    another environment): without a reset the client would skip every event up to that id."""
    token = token_for(admin)
    jobs = Jobs(engine)
    with SSEClient(service.url, token=token, params=UPDATES_ONLY) as client:
        newest = client.wait_for(for_job(jobs.insert()), 5).int_id
    with SSEClient(service.url, token=token, params=UPDATES_ONLY, last_event_id=newest + 1000) as ahead:
        reset = ahead.next_event(5)
        assert reset.name == "reset"
        job = jobs.insert()
        assert for_job(job)(ahead.next_event(5)), "live events follow the reset"
