"""The whole loop, for real: request -> outbox -> RabbitMQ (or the owner's HTTP API) -> the owner
re-queues the row -> capture -> item picked up -> job-action event on SSE and Socket.IO. The
owner is played by a consumer (tests/support/rabbitmq.py) that counts what it receives."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg2
import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.tables import JOBS_TABLE
from admin_service.live.connection import libpq_dsn
from tests.support.factories import Data
from tests.support.live import ENV, wait_until
from tests.support.rabbitmq import Owner
from tests.support.service import RunningService, run_service
from tests.support.socketio import Probe
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for

JOB_ACTION = "job-action"


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"ACTION_AMQP_EXCHANGE": f"test-actions-{tag}", "ACTION_AMQP_ROUTING_KEY": f"retry.{tag}"}


@contextmanager
def owner_of(amqp_url: str, database_url: str, env: dict[str, str], **options: Any) -> Iterator[Owner]:
    owner = Owner(amqp_url, database_url, env["ACTION_AMQP_EXCHANGE"], env["ACTION_AMQP_ROUTING_KEY"], **options).start()
    try:
        yield owner
    finally:
        owner.stop()


def failed(data: Data, n: int) -> list[dict[str, Any]]:
    return [data.job(status="failed", error_message="analysis worker crashed") for _ in range(n)]


def action_of(svc: RunningService, token: str, action_id: str, **params: Any) -> dict[str, Any]:
    response = requests.get(f"{svc.url}/admin/jobs/actions/{action_id}", params=params, headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def bulk_retry(svc: RunningService, token: str, flt: dict[str, Any], reason: str = "broker back") -> dict[str, Any]:
    url, headers = f"{svc.url}/admin/jobs/actions", bearer(token)
    preview = requests.post(url, json={"kind": "retry", "filter": flt, "dry_run": True}, headers=headers, timeout=30)
    assert preview.status_code == 200, preview.text
    body = {"kind": "retry", "filter": flt, "reason": reason, "confirmation_token": preview.json()["data"]["confirmation_token"]}
    response = requests.post(url, json=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def all_picked_up(svc: RunningService, token: str, action_id: str, total: int) -> Any:
    action = action_of(svc, token, action_id, limit=1)
    return action if action["counts"]["picked_up"] == total else None


def test_one_retry_goes_round_the_whole_loop(
    database_url: str, engine: Engine, clean: Data, operator: dict[str, Any], amqp_url: str, tmp_path: Path
) -> None:
    env = {**ENV, **names(), "ACTION_AMQP_URL": amqp_url}
    job = failed(clean, 1)[0]
    token = token_for(operator)
    with owner_of(amqp_url, database_url, env) as owner, run_service(database_url, tmp_path, env=env) as svc:
        probe = Probe(svc.url).connect(token)
        probe.call("subscribe:jobs")
        with SSEClient(svc.url, token=token, params={"events": f"{JOB_ACTION},job-update"}) as stream:
            asked = time.monotonic()
            response = requests.post(
                f"{svc.url}/admin/jobs/{job['id']}/retry",
                json={"reason": "the worker is fixed"},
                headers=bearer(token),
                timeout=10,
            )
            assert response.status_code == 202, response.text
            action = response.json()["data"]
            created = stream.wait_for(lambda e: e.name == JOB_ACTION and e.data["event"] == "created", 10, "created")
            first_event_s = time.monotonic() - asked
            picked = stream.wait_for(lambda e: e.name == JOB_ACTION and e.data["event"] == "picked-up", 30, "picked up")
        over_socketio = probe.wait_for(JOB_ACTION, lambda d: d["event"] == "picked-up", timeout=10)
        probe.close()
        timeline = requests.get(f"{svc.url}/admin/jobs/{job['id']}/events", headers=bearer(token), timeout=10).json()["data"]
        detail = action_of(svc, token, action["id"])
    print(f"first job-action event {first_event_s * 1000:.0f} ms after the request")

    assert created.data["action"]["id"] == action["id"]
    assert picked.data["action"]["counts"]["picked_up"] == 1
    assert over_socketio == picked.data, "the same payload on both transports"
    item = detail["items"][0]
    assert (item["state"], item["picked_up_status"], item["attempts"]) == ("picked_up", "queued", 1)
    [command] = owner.messages
    assert command["version"] == 1 and command["type"] == "admin.job.retry"
    assert command["idempotency_key"] == command["item_id"] == item["id"]
    assert command["action_id"] == action["id"]
    assert command["job_ids"] == [job["job_id"]] and command["job_row_ids"] == [job["id"]]
    assert command["user_id"] == job["user_id"]
    assert command["requested_by"] == {"id": operator["id"], "email": operator["email"]}
    assert command["reason"] == "the worker is fixed"
    assert owner.properties[0].delivery_mode == 2 and owner.properties[0].headers["idempotency-key"] == item["id"]
    entries = [(e["event"], e["kind"]) for e in timeline["events"]]
    assert ("job-action", "retry-requested") in entries
    requested = next(e for e in timeline["events"] if e["event"] == "job-action")
    assert requested["payload"]["reason"] == "the worker is fixed"
    assert requested["payload"]["requested_by"]["email"] == operator["email"]
    assert requested["payload"]["item"]["state"] == "picked_up"
    assert entries.index(("job-action", "retry-requested")) < entries.index(("job-update", "updated")), "before the re-queue"


def test_a_returned_message_is_retried_until_a_queue_takes_it(
    database_url: str, engine: Engine, clean: Data, operator: dict[str, Any], amqp_url: str, tmp_path: Path
) -> None:
    env = {**ENV, **names(), "ACTION_AMQP_URL": amqp_url}
    job = failed(clean, 1)[0]
    token = token_for(operator)
    with run_service(database_url, tmp_path, env=env) as svc:
        # The exchange exists, nothing is bound to the routing key: the broker returns the message.
        Owner(amqp_url, database_url, env["ACTION_AMQP_EXCHANGE"], "elsewhere").declare()
        response = requests.post(
            f"{svc.url}/admin/jobs/{job['id']}/retry", json={"reason": "x"}, headers=bearer(token), timeout=10
        )
        action_id = response.json()["data"]["id"]
        returned = wait_until(
            lambda: (item := action_of(svc, token, action_id)["items"][0])["last_error"] and item, 30, "the return recorded"
        )
        assert returned["state"] == "pending" and "no queue is bound" in returned["last_error"]
        with owner_of(amqp_url, database_url, env) as owner:
            wait_until(lambda: all_picked_up(svc, token, action_id, 1), 60, "picked up once a queue is bound")
    assert owner.requeued[job["id"]] == 1


def test_bulk_progress_and_a_job_never_picked_up_is_reported(
    database_url: str, engine: Engine, clean: Data, operator: dict[str, Any], amqp_url: str, tmp_path: Path
) -> None:
    env = {**ENV, **names(), "ACTION_AMQP_URL": amqp_url, "ACTION_PICKUP_TIMEOUT_S": "2"}
    failed(clean, 20)
    token = token_for(operator)
    with owner_of(amqp_url, database_url, env, requeue=False) as owner, run_service(database_url, tmp_path, env=env) as svc:
        with SSEClient(svc.url, token=token, params={"events": JOB_ACTION}) as stream:
            action = bulk_retry(svc, token, {"status": "failed"})
            overdue = stream.wait_for(lambda e: e.data["event"] == "overdue" and e.data["action"]["counts"]["overdue"] == 20, 60)
        progress = [e.data["action"]["counts"] for e in stream.events if e.data["action"]["id"] == action["id"]]
    assert overdue.data["action"]["counts"]["sent"] == 20 and overdue.data["action"]["state"] == "done"
    sent = [c["sent"] for c in progress]
    assert sent == sorted(sent), "progress only moves forward"
    assert len(owner.deliveries) == 20 and not owner.requeued


class OwnerApi(BaseHTTPRequestHandler):
    """The owner service's retry endpoint: re-queues the job, or refuses one it cannot retry."""

    calls: list[dict[str, Any]] = []
    refuse: set[str] = set()
    database_url = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
        [job] = body["job_row_ids"]
        if job in self.refuse:
            answer, status = {"success": False, "error": {"message": "job belongs to a deleted user"}}, 422
        else:
            with psycopg2.connect(libpq_dsn(self.database_url)) as db, db.cursor() as cur:
                cur.execute(
                    f"UPDATE {JOBS_TABLE} SET status = 'queued', updated_at = now() WHERE id = %s AND status = 'failed'", (job,)
                )
            answer, status = {"success": True}, 202
        raw = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def test_over_http_the_owner_is_called_and_its_refusal_recorded(
    database_url: str, engine: Engine, clean: Data, operator: dict[str, Any], tmp_path: Path, settings: Settings
) -> None:
    good, refused = failed(clean, 2)
    OwnerApi.calls, OwnerApi.refuse, OwnerApi.database_url = [], {refused["id"]}, database_url
    server = ThreadingHTTPServer(("127.0.0.1", 0), OwnerApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**ENV, "JOB_ACTIONS_URL": f"http://127.0.0.1:{server.server_port}/internal", "JOB_ACTIONS_SERVICE_KEY": "s3cret"}
    token = token_for(operator)
    try:
        with run_service(database_url, tmp_path, env=env) as svc:
            action = bulk_retry(svc, token, {"status": "failed"})
            done = wait_until(
                lambda: (
                    (a := action_of(svc, token, action["id"]))["counts"]["picked_up"] == 1 and a["counts"]["failed"] == 1 and a
                ),
                60,
                "one picked up, one refused",
            )
    finally:
        server.shutdown()
    items = {i["job_row_id"]: i for i in done["items"]}
    assert items[refused["id"]]["state"] == "failed"
    assert items[refused["id"]]["reason"] == "owner service refused it (422): job belongs to a deleted user"
    assert items[good["id"]]["state"] == "picked_up"
    for call in OwnerApi.calls:
        assert call["path"] == "/internal/jobs/retry"
        assert call["headers"]["X-Service-Key"] == "s3cret"
        assert call["headers"]["Idempotency-Key"] == call["body"]["idempotency_key"]
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT status FROM {JOBS_TABLE} WHERE id = :id"), {"id": refused["id"]}).scalar() == "failed"


def test_the_embedded_demo_plays_the_platform(
    database_url: str, engine: Engine, clean: Data, operator: dict[str, Any], tmp_path: Path
) -> None:
    """`make run`'s stand-in (serve sets these two for its embedded database only): a retried job is
    re-queued, then moves on to processing and completed, as the platform would run it."""
    env = {**ENV, "ADMIN_SERVICE_EMBEDDED_DEMO": "true", "ACTION_TRANSPORT": "demo"}
    job = failed(clean, 1)[0]
    token = token_for(operator)
    with run_service(database_url, tmp_path, env=env) as svc:
        response = requests.post(
            f"{svc.url}/admin/jobs/{job['id']}/retry", json={"reason": "try it"}, headers=bearer(token), timeout=10
        )
        assert response.status_code == 202, response.text
        wait_until(lambda: all_picked_up(svc, token, response.json()["data"]["id"], 1), 30, "picked up")

        def status() -> str:
            with engine.connect() as conn:
                return str(conn.execute(text(f"SELECT status FROM {JOBS_TABLE} WHERE id = :id"), {"id": job["id"]}).scalar())

        wait_until(lambda: status() == "completed", 30, "the demo job completed")
