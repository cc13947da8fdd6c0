"""The tail: every instance publishes the one event log, with the same ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.support.factories import Data
from tests.support.live import ENV, LEADER, UPDATES_ONLY, Jobs, assert_no_duplicates, for_job
from tests.support.service import run_service
from tests.support.sse_client import SSEClient
from tests.support.tokens import token_for


def test_two_instances_deliver_the_same_ids_and_a_client_can_move(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    jobs = Jobs(engine)
    with (
        run_service(database_url, tmp_path, env=ENV) as a,
        run_service(database_url, tmp_path, env=ENV) as b,
        SSEClient(b.url, token=token, params=UPDATES_ONLY) as on_b,
    ):
        with SSEClient(a.url, token=token, params=UPDATES_ONLY) as on_a:
            first = jobs.insert()
            got_a = on_a.wait_for(for_job(first), 5)
            got_b = on_b.wait_for(for_job(first), 5)
            assert (got_a.id, got_a.data) == (got_b.id, got_b.data), "the same change is the same event everywhere"
            last_on_a = got_a.id
        # The client leaves A; three changes; it comes back on B with its Last-Event-ID.
        moved = [jobs.insert(), jobs.insert()]
        jobs.set_status(first, "completed")
        expected = [on_b.wait_for(for_job(moved[0]), 5), on_b.wait_for(for_job(moved[1]), 5), on_b.wait_for(for_job(first), 5)]
        with SSEClient(b.url, token=token, params=UPDATES_ONLY, last_event_id=last_on_a) as resumed:
            got = [resumed.next_event(5) for _ in expected]
            assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected]
            later = jobs.insert()
            assert for_job(later)(resumed.next_event(5))
            resumed.collect(0.5)
            assert_no_duplicates(resumed.events)
    assert a.log().count(LEADER) + b.log().count(LEADER) == 1, "one capture leader for both"
