"""Faults during a bulk retry: the broker going down and coming back, and the service killed
mid-dispatch. Nothing is lost, and the owner (who counts idempotency keys) retries each job once."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from admin_service.config import Settings
from tests.actions.test_loop import action_of, bulk_retry, failed, owner_of
from tests.support.factories import Data
from tests.support.live import ENV, wait_until
from tests.support.rabbitmq import RabbitNode, node_port
from tests.support.service import run_service
from tests.support.tokens import token_for


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own, which it may stop and start (not the machine's)."""
    node = RabbitNode(node_port(), Path(tempfile.mkdtemp(prefix="admin-service-test-rabbitmq-")))
    try:
        node.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield node
    node.stop()
    shutil.rmtree(node.folder, ignore_errors=True)


def items_by_job(engine: Engine, settings: Settings, action_id: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f'SELECT id::text, job_row_id::text, state, attempts FROM "{settings.admin_schema}".action_items WHERE action_id = :a'
            ),
            {"a": action_id},
        ).all()
    return {row[1]: {"id": row[0], "state": row[2], "attempts": row[3]} for row in rows}


def test_the_broker_down_during_a_bulk_retry_of_500_jobs_then_back(
    database_url: str,
    engine: Engine,
    settings: Settings,
    clean: Data,
    operator: dict[str, Any],
    broker: RabbitNode,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **ENV,
        "ACTION_AMQP_URL": broker.url,
        "ACTION_AMQP_EXCHANGE": f"test-{tag}",
        "ACTION_AMQP_ROUTING_KEY": f"retry.{tag}",
        "ACTION_RATE_PER_S": "50",
        "ACTION_BACKOFF_MAX_S": "2",
        "ACTION_SEND_TIMEOUT_S": "2",
    }
    jobs = failed(clean, 500)
    token = token_for(operator)
    with owner_of(broker.url, database_url, env) as owner, run_service(database_url, tmp_path, env=env) as svc:
        action = bulk_retry(svc, token, {"status": "failed"})
        wait_until(lambda: sum(owner.deliveries.values()) >= 100, 60, "a hundred commands through")
        down_at = sum(owner.deliveries.values())
        broker.kill()
        time.sleep(3)  # the dispatcher finds it down and backs off
        during = action_of(svc, token, action["id"], limit=1)
        broker.start()
        done = wait_until(
            lambda: (a := action_of(svc, token, action["id"], limit=1))["counts"]["picked_up"] == 500 and a, 180, "all picked up"
        )
    assert down_at < 500, "the broker went down mid-action"
    assert "deadlock" not in svc.log() and "unexpected error" not in svc.log()
    assert during["counts"]["pending"] > 0 and during["state"] == "running"
    assert done["state"] == "done" and done["counts"]["pending"] == 0
    items = items_by_job(engine, settings, action["id"])
    assert all(owner.requeued[job["id"]] == 1 for job in jobs), "every job re-queued once, none lost"
    for job in jobs:
        item = items[job["id"]]
        assert item["state"] == "picked_up"
        # Sent at most once per attempt: a message without an attempt would be a duplicate send.
        assert 1 <= owner.published[item["id"]] <= item["attempts"], item
    assert max(i["attempts"] for i in items.values()) > 1, "some sends failed while it was down and were retried"


def test_killed_mid_dispatch_it_resumes_and_no_job_is_retried_twice(
    database_url: str, engine: Engine, settings: Settings, clean: Data, operator: dict[str, Any], amqp_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **ENV,
        "ACTION_AMQP_URL": amqp_url,
        "ACTION_AMQP_EXCHANGE": f"test-{tag}",
        "ACTION_AMQP_ROUTING_KEY": f"retry.{tag}",
        "ACTION_RATE_PER_S": "20",
    }
    jobs = failed(clean, 100)
    token = token_for(operator)
    with owner_of(amqp_url, database_url, env) as owner:
        with run_service(database_url, tmp_path, env=env) as svc:
            action = bulk_retry(svc, token, {"status": "failed"})
            wait_until(lambda: sum(owner.deliveries.values()) >= 20, 60, "twenty commands through")
            for pid in [*svc.workers(), svc.process.pid]:  # SIGKILL: no shutdown, no release, mid-send
                os.kill(pid, signal.SIGKILL)
            svc.process.wait(10)
        killed_at = sum(owner.deliveries.values())
        with run_service(database_url, tmp_path, env=env) as again:
            done = wait_until(
                lambda: (a := action_of(again, token, action["id"], limit=1))["counts"]["picked_up"] == 100 and a,
                120,
                "all picked up after the restart",
            )
    assert killed_at < 100, "killed mid-dispatch"
    assert done["state"] == "done"
    items = items_by_job(engine, settings, action["id"])
    for job in jobs:
        assert owner.requeued[job["id"]] == 1, "the owner retried each job once"
        assert owner.keys_of_job[job["id"]] == {items[job["id"]]["id"]}, "always with the item's own key"
        assert items[job["id"]]["state"] == "picked_up"
