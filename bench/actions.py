"""Job actions against a benchmark dataset (issue 14's budgets): the dry run over a filter matching
50,000 failed jobs, a 1,000-job bulk retry dispatched with publisher confirms at ACTION_RATE_PER_S
raised to 500, the first job-action event after the request, and REST latency on the same
instance while the bulk action runs.

    python -m bench.actions --url postgresql://.../bench [--amqp amqp://guest:guest@127.0.0.1:5672/%2F]

The dataset comes from `python -m bench.dataset`; the service runs under gunicorn as production
does. A consumer on the broker takes the commands and acks them without touching the jobs (the
dataset stays as it is): what is measured is this service's side, up to the confirmed send.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import psycopg2
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from admin_service.auth import sign_token  # noqa: E402
from admin_service.config import load_settings  # noqa: E402
from admin_service.db.engine import make_engine  # noqa: E402
from admin_service.db.fixtures import DEMO_PEOPLE  # noqa: E402
from admin_service.db.migrations import upgrade  # noqa: E402
from admin_service.live.connection import libpq_dsn  # noqa: E402
from bench.service import BENCH_SECRET, run_service  # noqa: E402
from tests.support.sse_client import SSEClient  # noqa: E402

REASON = "bench.actions"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "n": len(values),
    }


def date_from_matching(url: str, failed: int) -> str:
    """The created_at from which `failed` failed jobs are newer (the filter of that many)."""
    with psycopg2.connect(libpq_dsn(url)) as db, db.cursor() as cur:
        cur.execute(
            "SELECT created_at FROM archive.analysis_jobs WHERE status = 'failed' ORDER BY created_at DESC OFFSET %s LIMIT 1",
            (failed - 1,),
        )
        return str(cur.fetchone()[0].isoformat())


class AckingConsumer(threading.Thread):
    def __init__(self, amqp_url: str, exchange: str, routing_key: str) -> None:
        super().__init__(daemon=True)
        self.params = pika.URLParameters(amqp_url)
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        connection = pika.BlockingConnection(self.params)
        channel = connection.channel()
        channel.exchange_declare(exchange, "direct", durable=True)
        channel.queue_declare(self.queue, auto_delete=False)
        channel.queue_bind(self.queue, exchange, routing_key)
        connection.close()
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(self.params)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=200)

        def on_message(ch: Any, method: Any, _props: Any, _body: bytes) -> None:
            self.received += 1
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.queue, on_message)
        while not self.stop.is_set():
            connection.process_data_events(0.2)
        channel.queue_delete(self.queue)
        connection.close()


def forget_bench_actions(url: str, schema: str) -> None:
    """This benchmark's earlier actions would hold its jobs as being retried (they are never picked up)."""
    with psycopg2.connect(libpq_dsn(url)) as db, db.cursor() as cur:
        cur.execute(f'DELETE FROM "{schema}".actions WHERE reason = %s', (REASON,))


def timed_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[float, Any]:
    started = time.perf_counter()
    response = requests.post(url, json=body, headers=headers, timeout=30)
    elapsed = time.perf_counter() - started
    assert response.status_code in (200, 202), response.text
    return elapsed, response.json()["data"]


def rest_latencies(base: str, headers: dict[str, str], seconds: float, stop: threading.Event | None = None) -> list[float]:
    """GET /admin/jobs (a failed page) back to back for `seconds` (or until `stop`)."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        started = time.perf_counter()
        response = requests.get(f"{base}/admin/jobs", params={"status": "failed", "limit": 50}, headers=headers, timeout=30)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--dry-runs", type=int, default=60)
    parser.add_argument("--rate", type=float, default=500)
    args = parser.parse_args()
    settings = load_settings({"JWT_SECRET": BENCH_SECRET}, database_url=args.url)
    engine = make_engine(settings)
    upgrade(engine, settings)
    engine.dispose()
    forget_bench_actions(args.url, settings.admin_schema)
    tag = uuid.uuid4().hex[:8]
    exchange, routing_key = f"bench-{tag}", f"retry.{tag}"
    consumer = AckingConsumer(args.amqp, exchange, routing_key)
    consumer.start()
    operator_id = next(p[0] for p in DEMO_PEOPLE if p[3] == "superadmin")
    token = sign_token(settings, operator_id)
    headers = {"Authorization": f"Bearer {token}"}
    env = {
        "ACTION_AMQP_URL": args.amqp,
        "ACTION_AMQP_EXCHANGE": exchange,
        "ACTION_AMQP_ROUTING_KEY": routing_key,
        "ACTION_RATE_PER_S": str(args.rate),
        "LOG_LEVEL": "WARNING",
    }
    results: dict[str, Any] = {}
    with run_service(args.url, Path(tempfile.mkdtemp(prefix="bench-actions-")), env) as svc:
        actions_url = f"{svc.url}/admin/jobs/actions"
        wide = {"status": "failed", "date_from": date_from_matching(args.url, 50_000)}
        dry: list[float] = []
        for _ in range(args.dry_runs):
            elapsed, data = timed_post(actions_url, {"kind": "retry", "filter": wide, "dry_run": True}, headers)
            dry.append(elapsed)
        results["dry_run_50k"] = {**summary(dry), "matched": data["count"], "failed": data["retryable"], "budget_p95_ms": 200}
        results["rest_idle"] = summary(rest_latencies(svc.url, headers, 10))

        narrow = {"status": "failed", "date_from": date_from_matching(args.url, 1000)}
        _, preview = timed_post(actions_url, {"kind": "retry", "filter": narrow, "dry_run": True}, headers)
        stop_rest = threading.Event()
        during: list[float] = []
        rest = threading.Thread(target=lambda: during.extend(rest_latencies(svc.url, headers, 60, stop_rest)), daemon=True)
        with SSEClient(svc.url, token=token, params={"events": "job-action"}) as stream:
            rest.start()
            asked = time.monotonic()
            body = {"kind": "retry", "filter": narrow, "reason": REASON, "confirmation_token": preview["confirmation_token"]}
            request_s, action = timed_post(actions_url, body, {**headers, "Idempotency-Key": str(uuid.uuid4())})
            assert action["counts"]["pending"] == 1000, action["counts"]
            first = stream.wait_for(lambda e: e.data["action"]["id"] == action["id"], 10, "the first job-action")
            first_event_s = first.received_at - asked
            done = stream.wait_for(
                lambda e: e.data["action"]["id"] == action["id"] and e.data["action"]["counts"]["pending"] == 0, 120, "all sent"
            )
            dispatched_s = done.received_at - asked
            events = len(stream.events)
        stop_rest.set()
        rest.join(30)
        counts = done.data["action"]["counts"]
        results["bulk_1000"] = {
            "jobs": action["total"],
            "request_ms": round(request_s * 1000, 1),
            "first_job_action_event_ms": round(first_event_s * 1000, 1),
            "all_sent_with_confirms_s": round(dispatched_s, 2),
            "sent": counts["sent"] + counts["picked_up"],
            "consumer_received": consumer.received,
            "rate_per_s": args.rate,
            "job_action_events": events,
            "budget_s": 10,
        }
        results["rest_during_bulk"] = summary(during)
    consumer.stop.set()
    consumer.join(10)
    forget_bench_actions(args.url, settings.admin_schema)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
