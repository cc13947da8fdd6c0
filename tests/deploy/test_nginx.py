"""Two instances behind Debian's nginx running the shipped deploy/nginx.conf (rendered by
tests/support/nginx.py, not a copy), each instance as `serve` starts it (gunicorn.conf.py's
default workers), one database, rate limits in Redis. Everything is checked through nginx:
REST, Socket.IO with the npm socket.io-client over WebSocket and over long-polling only, the
shared rate limit, one capture leader, and an SSE stream that resumes on the other instance
with Last-Event-ID when its own stops, without losing an event.

The last test stops an instance: it stays last in this module.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from admin_service.config import Settings
from admin_service.names import ALERT_RULES
from tests.support.event_log import logged_events, reset_event_log
from tests.support.factories import Data
from tests.support.live import ENV as LIVE_ENV
from tests.support.live import UPDATES_ONLY, Jobs, assert_no_duplicates, updates, wait_until
from tests.support.metrics import P, scrape, value
from tests.support.nginx import RunningNginx, answered_by, run_nginx
from tests.support.node_socketio import NodeClient, node_client_script
from tests.support.service import RunningService, run_service
from tests.support.socketio import is_job
from tests.support.sse_client import SSEClient, SSEEvent
from tests.support.tokens import bearer, token_for

BUDGET = 30  # requests per minute per admin (RATE_LIMIT), shared by both instances through Redis
METRICS_TOKEN = "metrics-token-for-the-nginx-test"


@dataclass
class Deployment:
    instances: list[RunningService]
    nginx: RunningNginx

    @property
    def url(self) -> str:
        return self.nginx.url

    def instance_at(self, upstream: str) -> RunningService:
        return next(s for s in self.instances if upstream == f"127.0.0.1:{s.port}")


@pytest.fixture(scope="module")
def deployment(
    database_url: str, engine: Engine, settings: Settings, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    reset_event_log(engine, settings)
    env = {
        **LIVE_ENV,
        "RATE_LIMIT": f"{BUDGET} per minute",
        "RATE_LIMIT_STORAGE_URI": redis_url,
        "TRUST_PROXY": "true",
        "METRICS_TOKEN": METRICS_TOKEN,
        "LOG_LEVEL": "WARNING",
    }
    folder = tmp_path_factory.mktemp("nginx")
    with ExitStack() as stack:
        instances = [stack.enter_context(run_service(database_url, folder, workers=None, env=env)) for _ in range(2)]
        nginx = stack.enter_context(run_nginx(instances))
        yield Deployment(instances, nginx)
        # Refused connections to the stopped instance are expected ([error]); nothing worse.
        serious = [line for line in nginx.error_log().splitlines() if any(f"[{w}]" in line for w in ("crit", "alert", "emerg"))]
        assert not serious, serious


def refused(response: requests.Response, status: int, code: str) -> requests.Response:
    """An answer in the error envelope (the instance's, not an nginx error page)."""
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return response


def new_lines(nginx: RunningNginx, before: int) -> list[str]:
    return nginx.access_log()[before:]


def upstreams_of(lines: list[str]) -> set[str]:
    return {answered_by(line) for line in lines}


def test_each_instance_runs_its_default_workers(deployment: Deployment) -> None:
    # As `serve` starts it: gunicorn.conf.py's count (at least two), so Socket.IO polling
    # crosses workers inside an instance as well.
    assert all(len(s.workers()) >= 2 for s in deployment.instances), [s.workers() for s in deployment.instances]


def test_rest_through_nginx_is_spread_over_both_instances(deployment: Deployment, data: Data, redis_keys: list[str]) -> None:
    admin = data.user(user_type="admin")
    redis_keys.append(admin["id"])
    headers = bearer(token_for(admin))
    job = data.job(status="failed", assessment_name="nginx check")
    before = len(deployment.nginx.access_log())
    for _ in range(3):
        stats = requests.get(f"{deployment.url}/admin/jobs/stats", headers=headers, timeout=10)
        assert stats.status_code == 200, stats.text
        assert stats.json()["data"]["overview"]["total"] >= 1
        listed = requests.get(
            f"{deployment.url}/admin/jobs", params={"status": "failed", "limit": 5}, headers=headers, timeout=10
        )
        assert listed.status_code == 200 and job["id"] in [j["id"] for j in listed.json()["data"]["jobs"]]
        one = requests.get(f"{deployment.url}/admin/jobs/{job['id']}", headers=headers, timeout=10)
        assert one.status_code == 200 and one.json()["data"]["assessment_name"] == "nginx check"
    refused(requests.get(f"{deployment.url}/admin/jobs/stats", timeout=10), 401, "UNAUTHORIZED")
    answered_by = upstreams_of(new_lines(deployment.nginx, before))
    assert answered_by == {f"127.0.0.1:{s.port}" for s in deployment.instances}


def test_rate_limit_is_shared_by_both_instances_through_redis(deployment: Deployment, data: Data, redis_keys: list[str]) -> None:
    admin = data.user(user_type="admin")
    redis_keys.append(admin["id"])
    headers = bearer(token_for(admin))
    before = len(deployment.nginx.access_log())
    remaining = []
    for _ in range(BUDGET):
        response = requests.get(f"{deployment.url}/admin/jobs/stats", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    # One budget, counted down by whichever instance (and worker) answered.
    assert remaining == list(range(BUDGET - 1, -1, -1))
    assert len(upstreams_of(new_lines(deployment.nginx, before))) == 2, "both instances answered"
    for _ in range(2):  # and refused on both
        over = refused(
            requests.get(f"{deployment.url}/admin/jobs/stats", headers=headers, timeout=10), 429, "RATE_LIMIT_EXCEEDED"
        )
        assert int(over.headers["Retry-After"]) >= 1
    # Another admin has a budget of its own.
    other = data.user(user_type="admin")
    redis_keys.append(other["id"])
    assert requests.get(f"{deployment.url}/admin/jobs/stats", headers=bearer(token_for(other)), timeout=10).status_code == 200


def leaders(deployment: Deployment) -> list[float]:
    """Each instance's admin_service_capture_leader (scraped directly: nginx would pick one)."""
    return [value(scrape(s.url, headers=bearer(METRICS_TOKEN)), f"{P}_capture_leader") for s in deployment.instances]


def test_exactly_one_capture_leader_across_both_instances(deployment: Deployment) -> None:
    wait_until(lambda: sum(leaders(deployment)) == 1, 15, "one capture leader")
    for _ in range(3):
        assert sorted(leaders(deployment)) == [0, 1]
    # The metrics answer through nginx too, with the metrics token (an operator's scrape).
    through = scrape(deployment.url, headers=bearer(METRICS_TOKEN))
    assert value(through, f"{P}_capture_leader") in (0, 1)


@pytest.mark.parametrize(
    ("transports", "count"),
    [(["websocket"], 5), (["polling"], 10), (["polling", "websocket"], 5)],
    ids=["websocket", "polling-only", "polling-then-upgrade"],
)
def test_socketio_through_nginx(
    deployment: Deployment, data: Data, admin: dict[str, Any], transports: list[str], count: int
) -> None:
    script: Path = node_client_script()
    token = token_for(admin)
    clients = [NodeClient(script, deployment.url, token, transports) for _ in range(count)]
    try:
        for client in clients:
            connected = client.wait_for(lambda r: r["type"] in ("connect", "connect_error"), timeout=15)
            assert connected["type"] == "connect" and connected["transport"] in transports, connected
            assert client.wait_for(lambda r: r["type"] == "ack", timeout=10)["data"] == {"ok": True}
        job = data.job(status="processing")
        data.execute("UPDATE archive.analysis_jobs SET status = 'completed', updated_at = now() WHERE id = :id", id=job["id"])
        for client in clients:
            client.event("job-update", is_job(job, "completed"), timeout=15)
        for client in clients:  # never dropped and reconnected on the way
            assert [r["type"] for r in client.records if r["type"] in ("connect", "disconnect")] == ["connect"]
    finally:
        for client in clients:
            client.close()


def test_socketio_polling_clients_are_spread_by_address_and_each_kept_on_its_instance(
    deployment: Deployment, admin: dict[str, Any]
) -> None:
    """Clients from 20 addresses (127.0.0.2...): each one's handshake, CONNECT and polls all
    reach one instance (where its session is), and the addresses use both instances."""
    token = token_for(admin)
    before = len(deployment.nginx.access_log())
    addresses = [f"127.0.0.{n}" for n in range(2, 22)]
    for address in addresses:
        conn = http.client.HTTPConnection("127.0.0.1", deployment.nginx.port, timeout=10, source_address=(address, 0))
        try:
            opened = poll(conn, "GET", "")
            sid = json.loads(opened[1:])["sid"]
            assert poll(conn, "POST", sid, "40" + json.dumps({"token": token})) == "OK"
            answer = poll(conn, "GET", sid)  # the CONNECT's answer: found where the session is
            assert answer.startswith("40{") and '"sid"' in answer, answer
            assert poll(conn, "POST", sid, "41") == "OK"  # and leave
        finally:
            conn.close()
    by_address: dict[str, set[str]] = {}
    for line in new_lines(deployment.nginx, before):
        if " /admin/socket.io/" in line:
            by_address.setdefault(line.split()[0], set()).add(answered_by(line))
    assert set(by_address) == set(addresses)
    assert all(len(answered) == 1 for answered in by_address.values()), by_address
    assert len(set().union(*by_address.values())) == 2, "the addresses hash onto both instances"


def poll(conn: http.client.HTTPConnection, method: str, sid: str, body: str | None = None) -> str:
    """One Engine.IO long-polling request on this connection (keep-alive), its answer's text."""
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    headers = {"Content-Type": "text/plain;charset=UTF-8"} if body is not None else {}
    conn.request(method, f"/admin/socket.io/?{query}", body=body, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 200, (method, response.status, text)
    return text


class JobWriter:
    """Writes a new job every `every` seconds on a thread, as the platform would, and keeps their
    ids in commit order. One change per job: capture turns each into exactly one event (changes
    of one row between two capture passes would be one event, by design)."""

    def __init__(self, engine: Engine, every: float = 0.15) -> None:
        self.jobs = Jobs(engine)
        self.every = every
        self.written: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.written.append(self.jobs.insert(status="queued")["id"])

    def __enter__(self) -> JobWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def read(stream: SSEClient, seconds: float = 0.2) -> SSEClient:
    """What arrived within `seconds` parsed into stream.events (stream.ended once it closed)."""
    stream.pump(seconds)
    return stream


def job_ids(events: list[SSEEvent]) -> list[str]:
    return [e.data["job"]["id"] for e in updates(events)]


def test_sse_resumes_on_the_other_instance_without_losing_an_event(
    deployment: Deployment, data: Data, engine: Engine, settings: Settings, redis_keys: list[str]
) -> None:
    """Two streams through nginx (least_conn: one per instance); the instance that does not
    lead capture is stopped while jobs keep being written (so events are logged while its
    stream is away); that stream resumes through nginx with Last-Event-ID, on the other
    instance, and gets every event: the missed ones replayed, none lost, none twice."""
    admin = data.user(user_type="admin")
    redis_keys.append(admin["id"])
    token = token_for(admin)
    streams = [SSEClient(deployment.url, token=token, params=UPDATES_ONLY) for _ in range(2)]
    assert [s.status for s in streams] == [200, 200]
    wait_until(lambda: sum(leaders(deployment)) == 1, 15, "one capture leader")
    survivor, stopped = sorted(
        deployment.instances, key=lambda s: leaders(deployment)[deployment.instances.index(s)], reverse=True
    )
    with JobWriter(engine) as writer:
        wait_until(lambda: all(updates(read(s).events) for s in streams), 15, "events on both streams")
        stopped.process.terminate()
        ended = wait_until(lambda: [s for s in streams if read(s, 0.1).ended], 20, "a stream to end")
        assert len(ended) == 1, "each stream was on an instance of its own"
        cut, kept = ended[0], next(s for s in streams if s is not ended[0])
        assert cut.retry is not None and cut.retries[-1] < 3000  # the shutdown's short retry hint
        stopped.process.wait(15)
        # Away long enough for events to be logged that it did not receive.
        wait_until(lambda: len(logged_events(engine, settings, int(cut.last_event_id))) >= 3, 15, "events while away")
        resumed = SSEClient(deployment.url, token=token, params=UPDATES_ONLY, last_event_id=cut.last_event_id)
        assert resumed.status == 200
        missed_until = max(r[0] for r in logged_events(engine, settings))
        # Jobs keep coming for a while after the resume.
        count = len(writer.written)
        wait_until(lambda: len(writer.written) >= count + 10, 15, "more jobs after the resume")
    written = list(writer.written)

    def all_logged() -> list[tuple[int, str, str | None, dict[str, Any]]]:
        rows = [r for r in logged_events(engine, settings) if r[1] not in ALERT_RULES]  # job-updates
        return rows if {r[2] for r in rows} >= set(written) else []

    logged = wait_until(all_logged, 20, "every job in the log (the survivor took capture over)")
    last_id = logged[-1][0]
    for stream in (resumed, kept):
        wait_until(lambda s=stream: updates(read(s).events) and s.events[-1].int_id >= last_id, 20, "the last event")

    # The cut stream's two connections together, and the stream that stayed, each got every
    # logged job-update from the first it received on: in order, once; every job written since.
    whole = cut.events + resumed.events
    for events in (whole, kept.events):
        assert_no_duplicates(events)
        got = [e.int_id for e in updates(events)]
        expected = [r[0] for r in logged if r[0] >= got[0]]
        assert got == expected, f"lost: {sorted(set(expected) - set(got))[:10]}, extra: {sorted(set(got) - set(expected))[:10]}"
        first_job = job_ids(events)[0]
        assert job_ids(events) == written[written.index(first_job) :]
    assert job_ids(cut.events) and len(job_ids(resumed.events)) >= 10
    replayed = [e for e in updates(resumed.events) if e.int_id <= missed_until]
    assert len(replayed) >= 3
    print(
        f"\ncut stream: {len(updates(cut.events))} events, then {len(replayed)} replayed and"
        f" {len(updates(resumed.events)) - len(replayed)} live after the resume on the survivor"
    )
    # nginx logs a stream once it is over: the resumed one was answered by the survivor.
    resumed.close()
    survivor_at = f"127.0.0.1:{survivor.port}"
    wait_until(lambda: survivor_at in deployment.nginx.upstreams("/admin/jobs/stream"), 10, "the resumed stream in nginx's log")
    kept.close()
