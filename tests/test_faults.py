"""Faults, each against the real parts: the service under gunicorn (gevent workers) on a real
port, a real PostgreSQL, a real Redis, real sockets.

- PostgreSQL restarted under load (a PRIVATE embedded server, stopped and started here; the
  machine's shared server is never touched);
- the rate-limit store (Redis) going down and coming back, failing open, or closed;
- SIGTERM while a request is in flight;
- clients that vanish or stop reading, round after round, without memory growth.

Elsewhere: a slow database (statement timeout) in tests/test_database_outage.py; one stalled
subscriber in tests/live/test_hub.py, leader failover in tests/live/test_capture.py and streams ending on
SIGTERM in tests/live/test_sse.py.
"""

from __future__ import annotations

import selectors
import signal
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import Engine, text

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data, utcnow
from tests.support.live import (
    ENV,
    ESTABLISHED,
    JOB_UPDATE,
    LEADER,
    UPDATES_ONLY,
    Jobs,
    for_job,
    server_side_state,
    wait_log,
    wait_until,
)
from tests.support.metrics import P, scrape, value
from tests.support.postgres import PrivateServer, table_locked
from tests.support.redis_server import RedisServer
from tests.support.service import RunningService, free_port, run_service, worker_pids
from tests.support.settings import make_settings
from tests.support.sse_client import SSEClient
from tests.support.tokens import bearer, token_for

# --- load generators ---------------------------------------------------------------------------


class Answer:
    """One REST answer as a client saw it."""

    def __init__(self, sent: float, path: str, status: int | None, seconds: float, problem: str) -> None:
        self.sent, self.path, self.status, self.seconds, self.problem = sent, path, status, seconds, problem

    @property
    def done(self) -> float:
        return self.sent + self.seconds

    def __repr__(self) -> str:
        return f"{self.path} -> {self.status} in {self.seconds:.2f}s {self.problem}"


def outage_problem(response: requests.Response) -> str:
    """ "" for an answer a client may get while a dependency is down: 200 in the envelope, or
    503 SERVICE_UNAVAILABLE in it with Retry-After; otherwise what is wrong with it."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if response.status_code == 200 and body.get("success") is True:
        return ""
    if response.status_code == 503:
        error = body.get("error") or {}
        retry_after = response.headers.get("Retry-After", "")
        if (
            body.get("success") is False
            and error.get("code") == "SERVICE_UNAVAILABLE"
            and retry_after.isdigit()
            and int(retry_after) > 0
        ):
            return ""
        return f"503 outside the envelope or without Retry-After: {dict(response.headers)} {body}"
    return f"unexpected answer: {body}"


class RestLoad(threading.Thread):
    """An admin client asking for the given paths in a loop, recording every answer."""

    def __init__(self, url: str, token: str, paths: list[str], pause: float = 0.03) -> None:
        super().__init__(daemon=True)
        self.url, self.paths, self.pause = url, paths, pause
        self.headers = bearer(token)
        self.halt = threading.Event()
        self.answers: list[Answer] = []

    def run(self) -> None:
        session = requests.Session()
        turn = 0
        while not self.halt.is_set():
            path = self.paths[turn % len(self.paths)]
            turn += 1
            sent = time.monotonic()
            try:
                response = session.get(self.url + path, headers=self.headers, timeout=15)
                status, problem = response.status_code, outage_problem(response)
            except requests.RequestException as exc:  # a dead worker or a hung request shows here
                status, problem = None, f"{type(exc).__name__}: {exc}"
            self.answers.append(Answer(sent, path, status, time.monotonic() - sent, problem))
            self.halt.wait(self.pause)
        session.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(20)


class StreamFleet(threading.Thread):
    """Many SSE streams, all read by this one thread (selectors), keeping only what the checks
    need: the ids of the job-update events each stream received, over all its connections.

    A stream the server ends is opened again with its Last-Event-ID, as EventSource does; a
    refusal (503 while the database is down) is tried again a second later.
    """

    def __init__(self, url: str, token: str, count: int, params: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.params = url, token, params
        self.selector = selectors.DefaultSelector()
        self.clients: list[SSEClient | None] = [None] * count
        self.ids: list[list[int]] = [[] for _ in range(count)]  # job-update ids, in arrival order
        self.others: Counter[str] = Counter()  # other named events (error, reset, ...)
        self.resume_from: list[str] = [""] * count
        self.retry_at: dict[int, float] = {}
        self.reopened = 0
        self.refusals: Counter[int | str] = Counter()
        self.halt = threading.Event()
        self.lock = threading.Lock()
        for i in range(count):
            self._open(i)
        assert not self.retry_at, f"streams refused at start: {self.refusals}"

    def _open(self, i: int) -> None:
        try:
            client = SSEClient(self.url, token=self.token, params=self.params, last_event_id=self.resume_from[i] or None)
        except (OSError, AssertionError) as exc:  # refused, reset, or no head in time
            self.refusals[type(exc).__name__] += 1
            self.retry_at[i] = time.monotonic() + 1
            return
        if client.status != 200:
            self.refusals[client.status] += 1
            client.close()
            self.retry_at[i] = time.monotonic() + 1
            return
        self.clients[i] = client
        self.selector.register(client, selectors.EVENT_READ, i)
        self._take(i, client.pump(0))

    def _take(self, i: int, events: list[Any]) -> None:
        client = self.clients[i]
        assert client is not None
        with self.lock:
            for event in events:
                if event.name == JOB_UPDATE:
                    self.ids[i].append(event.int_id)
                elif event.name != "job-stats":
                    self.others[event.name] += 1
        client.events.clear()  # thousands of events on hundreds of streams: keep ids only
        if client.ended:
            self.selector.unregister(client)
            self.resume_from[i] = client.last_event_id or self.resume_from[i]
            client.close()
            self.clients[i] = None
            self.reopened += 1
            self._open(i)

    def run(self) -> None:
        while not self.halt.is_set():
            for key, _ in self.selector.select(0.2):
                client = self.clients[key.data]
                if client is not None:
                    self._take(key.data, client.pump(0))
            now = time.monotonic()
            for i, at in list(self.retry_at.items()):
                if at <= now:
                    del self.retry_at[i]
                    self._open(i)

    def received(self) -> list[list[int]]:
        with self.lock:
            return [list(ids) for ids in self.ids]

    def stop(self) -> None:
        self.halt.set()
        self.join(20)
        for client in self.clients:
            if client is not None:
                client.close()


NEXT_STATUS = {"queued": "processing", "processing": "completed"}
Change = tuple[str, datetime, str]  # (job row id, updated_at, status): one job change


class ChangeWriter(threading.Thread):
    """Writes job changes the way the platform's workers do, and remembers each committed one.

    A new job every step; jobs move on (processing, then completed) only once their previous
    change is in the event log. Capture reads row states, so two changes of one job between two
    capture passes are one event by design; waiting for the log makes every change committed
    here exactly one expected event.
    """

    INSERT = text(
        "INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, assessment_name, created_at, updated_at) "
        "VALUES (gen_random_uuid(), :job_id, gen_random_uuid(), 'queued', 'AI-Based IQ Test', now(), now()) "
        "RETURNING id::text, updated_at, status"
    )
    ADVANCE = text(
        """UPDATE archive.analysis_jobs SET status = :status, updated_at = now(),
               processing_started_at = CASE WHEN :status = 'processing' THEN now() ELSE processing_started_at END,
               completed_at = CASE WHEN :status = 'completed' THEN now() ELSE completed_at END
           WHERE id = CAST(:id AS uuid) RETURNING id::text, updated_at, status"""
    )

    def __init__(self, engine: Engine, schema: str, step_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.engine, self.schema, self.step_s = engine, schema, step_s
        self.changes: list[Change] = []
        self.moving: dict[str, str] = {}  # job id -> its status, until completed
        self.halt = threading.Event()
        self.hold = threading.Event()
        self.idle = threading.Event()
        self.error: BaseException | None = None

    def insert(self) -> Change:
        with self.engine.begin() as conn:
            row = conn.execute(self.INSERT, {"job_id": f"fault-{uuid.uuid4().hex[:12]}"}).one()
        change = (row[0], row[1], row[2])
        self.changes.append(change)
        self.moving[row[0]] = row[2]
        return change

    def advance(self, at_most: int = 3) -> None:
        if not self.moving:
            return
        with self.engine.connect() as conn:
            logged = set(
                conn.execute(
                    text(
                        f'SELECT job_row_id::text, status FROM "{self.schema}".job_events '
                        "WHERE event = 'job-update' AND job_row_id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": list(self.moving)},
                ).all()
            )
        ready = [job for job, status in self.moving.items() if (job, status) in logged][:at_most]
        for job in ready:
            with self.engine.begin() as conn:
                row = conn.execute(self.ADVANCE, {"id": job, "status": NEXT_STATUS[self.moving[job]]}).one()
            self.changes.append((row[0], row[1], row[2]))
            if row[2] == "completed":
                del self.moving[job]
            else:
                self.moving[job] = row[2]

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                if self.hold.is_set():
                    self.idle.set()
                    self.halt.wait(0.02)
                    continue
                self.idle.clear()
                self.insert()
                self.advance()
                self.halt.wait(self.step_s)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def pause(self) -> None:
        """Returns once no write is in flight: a commit cut by the outage would be of unknown fate."""
        self.idle.clear()
        self.hold.set()
        assert self.idle.wait(10), "the writer did not pause"

    def resume(self) -> None:
        self.hold.clear()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        assert self.error is None, repr(self.error)


def waiting_for_lock(engine: Engine, application_name: str) -> int:
    """Backends of this application name waiting for a lock on archive.analysis_jobs."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    """SELECT count(*) FROM pg_stat_activity a
                       WHERE a.datname = current_database() AND a.application_name = :name AND a.wait_event_type = 'Lock'
                         AND a.query ILIKE '%archive.analysis_jobs%'"""
                ),
                {"name": application_name},
            ).scalar()
        )


def logged_changes(engine: Engine, schema: str) -> list[tuple[int, Change]]:
    """Every job-update event in the log: (log id, the change it stands for), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"""SELECT id, job_row_id::text, payload->'job'->>'updated_at', status FROM "{schema}".job_events
                    WHERE event = 'job-update' ORDER BY id"""
            )
        ).all()
    return [(r[0], (r[1], datetime.fromisoformat(r[2]), r[3])) for r in rows]


# --- PostgreSQL restarted under load -------------------------------------------------------------

STREAMS = 150
OUTAGE_S = 4.0
UNCAPTURED = 10  # changes committed just before the stop that capture has certainly not read


def test_postgresql_restart_under_load(private_server: PrivateServer, private_engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(private_server.url)
    schema = settings.admin_schema
    reset_event_log(private_engine, settings)
    data = Data(private_engine)
    data.clear()
    admin = data.user(user_type="admin")
    token = token_for(admin)
    job = data.job(status="completed", completed_at=utcnow())
    paths = ["/admin/jobs?limit=20", f"/admin/jobs/{job['id']}", "/admin/jobs/stats"]
    writer = ChangeWriter(private_engine, schema)
    loads: list[RestLoad] = []
    fleet: StreamFleet | None = None
    try:
        with run_service(private_server.url, tmp_path, workers=2, env=ENV) as svc:
            wait_log(svc, LEADER)
            workers = sorted(worker_pids(svc))
            assert len(workers) == 2
            fleet = StreamFleet(svc.url, token, STREAMS, UPDATES_ONLY)
            fleet.start()
            loads = [RestLoad(svc.url, token, paths) for _ in range(3)]
            for load in loads:
                load.start()
            writer.start()
            time.sleep(3)

            # The last changes before the stop: capture cannot read them (its next pass waits for
            # this row lock), so after the restart it must catch up on them.
            writer.pause()
            blocker = private_engine.connect()
            blocker.begin()
            blocker.execute(text(f'SELECT 1 FROM "{schema}".capture_state WHERE id = 1 FOR UPDATE'))
            late = [writer.insert() for _ in range(UNCAPTURED)]
            assert not {c for _, c in logged_changes(private_engine, schema)} & set(late)

            stopping = time.monotonic()
            private_server.stop()
            with suppress(Exception):  # its server is gone
                blocker.close()
            time.sleep(OUTAGE_S)
            private_server.start()
            restarted = time.monotonic()
            writer.resume()

            wait_log(svc, LEADER, timeout=30, count=2)
            leader_back = time.monotonic() - restarted
            late_ids = wait_until(
                lambda: (
                    [i for i, c in logged_changes(private_engine, schema) if c in set(late)][UNCAPTURED - 1 :]
                    and [i for i, c in logged_changes(private_engine, schema) if c in set(late)]
                ),
                20,
                "the changes from before the stop in the log",
            )
            wait_until(
                lambda: all(set(late_ids) <= set(ids) for ids in fleet.received()),
                20,  # type: ignore[union-attr]
                "every stream to receive the changes from before the stop",
            )
            late_on_streams = time.monotonic() - restarted
            time.sleep(3)  # load and changes go on after the recovery
            writer.stop()
            for load in loads:
                load.stop()

            expected = set(writer.changes)
            wait_until(lambda: expected <= {c for _, c in logged_changes(private_engine, schema)}, 20, "every change in the log")
            logged = logged_changes(private_engine, schema)
            logged_ids = [i for i, _ in logged]
            wait_until(
                lambda: all(ids[-1:] == logged_ids[-1:] for ids in fleet.received()),
                20,  # type: ignore[union-attr]
                "every stream to catch up",
            )
            time.sleep(1)  # anything delivered twice would come now
            fleet.stop()
            received = fleet.received()
            assert sorted(worker_pids(svc)) == workers, "no worker died or was replaced"
            assert svc.process.poll() is None
            log = svc.log()
    finally:
        writer.halt.set()
        for load in loads:
            load.halt.set()
        if fleet is not None:
            fleet.halt.set()

    # The log: every committed change exactly once, and nothing else.
    counts = Counter(c for _, c in logged)
    assert [c for c, n in counts.items() if n > 1] == [], "a change logged twice"
    assert set(counts) == expected, f"missing: {expected - set(counts)}; unexpected: {set(counts) - expected}"
    # Every stream got every one of them, in log order, none twice (across reconnections).
    for stream_ids in received:
        assert stream_ids == logged_ids, (len(stream_ids), len(logged_ids))
    assert not fleet.others, f"streams got {fleet.others}"

    # REST: 200 or 503 in the envelope with Retry-After throughout, never hung.
    answers = sorted((a for load in loads for a in load.answers), key=lambda a: a.sent)
    problems = [a for a in answers if a.problem]
    assert problems == [], problems[:5]
    slowest = max(a.seconds for a in answers)
    assert slowest < 10, f"a request took {slowest:.1f}s"
    during = [a for a in answers if stopping <= a.sent and a.done <= restarted]
    assert any(a.status == 503 for a in during), "the outage was seen"
    assert all(a.status == 200 for a in answers if a.done < stopping), "all well before the stop"
    failing_after = [a for a in answers if a.sent >= restarted and a.status != 200]
    recovered = max((a.done for a in failing_after), default=restarted) - restarted
    assert recovered < 10, f"REST answered 503 until {recovered:.1f}s after the restart"
    healthy = [a for a in answers if a.sent >= restarted + recovered]
    assert {a.path for a in healthy if a.status == 200} == set(paths), "every path answers again"
    assert "Traceback" not in log, log[-3000:]

    print(
        f"\nPostgreSQL down {restarted - stopping:.1f}s (stop + {OUTAGE_S}s): {len(answers)} REST answers "
        f"({sum(a.status == 503 for a in answers)} x 503, {sum(a.status == 200 for a in during)} x 200 from cache while down), "
        f"slowest {slowest:.2f}s; REST 200 again {recovered:.2f}s after the restart, capture leader back after "
        f"{leader_back:.2f}s, pre-stop changes on all {STREAMS} streams after {late_on_streams:.2f}s; "
        f"{len(expected)} changes logged once each, {len(logged_ids) * STREAMS} deliveries verified, "
        f"{fleet.reopened} streams reopened, refusals {dict(fleet.refusals)}"
    )


# --- the rate-limit store (Redis) down ------------------------------------------------------------

RATE = 20  # per minute and admin, shared through Redis


def limited_get(svc: RunningService, user: dict[str, Any], path: str = "/admin/jobs?limit=1") -> requests.Response:
    # A fresh connection each time, so that nothing is held open during the faults.
    return requests.get(f"{svc.url}{path}", headers=bearer(token_for(user)), timeout=10)


def remaining(response: requests.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["X-RateLimit-Remaining"])


def assert_shared_budget(one: RunningService, two: RunningService, user: dict[str, Any]) -> None:
    """RATE requests alternating between the instances draw on one budget; then both refuse."""
    counted = [remaining(limited_get(one if i % 2 == 0 else two, user)) for i in range(RATE)]
    assert counted == list(range(RATE - 1, -1, -1)), counted
    for svc in (one, two):
        refused = limited_get(svc, user)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"


def in_store(store: redis.Redis, user: dict[str, Any]) -> bool:
    return any(user["id"] in key.decode() for key in store.scan_iter(match="*admin-service*"))


class MultiAdminLoad(threading.Thread):
    """Requests spread over many admins and instances, as an admin team's dashboards make them."""

    def __init__(self, services: list[RunningService], admins: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.services, self.admins = services, admins
        self.halt = threading.Event()
        self.answers: list[Answer] = []

    def run(self) -> None:
        turn = 0
        while not self.halt.is_set():
            svc = self.services[turn % len(self.services)]
            admin = self.admins[turn % len(self.admins)]
            turn += 1
            sent = time.monotonic()
            try:
                response = limited_get(svc, admin)
                status, problem = response.status_code, outage_problem(response)
            except requests.RequestException as exc:
                status, problem = None, f"{type(exc).__name__}: {exc}"
            self.answers.append(Answer(sent, "/admin/jobs", status, time.monotonic() - sent, problem))
            self.halt.wait(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(20)


def test_rate_limit_store_down_fails_open_and_its_return_shares_the_budget_again(
    database_url: str, data: Data, tmp_path: Path
) -> None:
    admins = [data.user(user_type="admin") for _ in range(60)]
    server = RedisServer(free_port())
    env = {"RATE_LIMIT": f"{RATE} per minute", "RATE_LIMIT_STORAGE_URI": server.url}
    load: RestLoad | None = None
    try:
        with run_service(database_url, tmp_path, env=env) as one, run_service(database_url, tmp_path, env=env) as two:
            assert_shared_budget(one, two, admins[0])  # the control: Redis up

            # Redis dies under load: many admins, a few requests each, on both instances.
            load = MultiAdminLoad([one, two], admins[1:40])
            load.start()
            time.sleep(1.0)
            server.process.kill()
            server.process.wait(5)
            killed = time.monotonic()
            time.sleep(2.0)
            load.stop()
            after_kill = [a for a in load.answers if a.sent >= killed]
            assert after_kill, "requests were made while Redis was down"
            assert [a for a in load.answers if a.status != 200] == [], "fail open: every request served"
            slowest = max(a.seconds for a in load.answers)
            assert slowest < 1.5, f"a request took {slowest:.2f}s while the store was down"
            for svc in (one, two):
                assert "Rate limit storage unreachable" in svc.log(), "a warning says the limiter fell back"

            # Meanwhile each process limits on its own: RATE on one, and the same admin still
            # has a whole budget on the other.
            alone = admins[40]
            counted = [remaining(limited_get(one, alone)) for _ in range(RATE)]
            assert counted == list(range(RATE - 1, -1, -1))
            assert limited_get(one, alone).status_code == 429
            assert remaining(limited_get(two, alone)) == RATE - 1

            # Redis is back (empty, as after a crash): each instance goes back to it by itself.
            server = RedisServer(server.port)
            back = time.monotonic()
            store = redis.Redis.from_url(server.url)
            probes = iter(admins[41:])
            for svc in (one, two):
                while True:
                    probe = next(probes, None)
                    assert probe is not None and time.monotonic() - back < 40, "an instance never went back to Redis"
                    assert limited_get(svc, probe).status_code == 200
                    if in_store(store, probe):
                        break
                    time.sleep(1)
            returned = time.monotonic() - back
            store.close()
            assert_shared_budget(one, two, data.user(user_type="admin"))  # one budget again
            log = one.log() + two.log()
    finally:
        if load is not None:
            load.halt.set()
        server.stop()
    assert "Traceback" not in log
    print(
        f"\nRedis down: {len(load.answers)} requests all 200 (slowest {slowest:.2f}s, {len(after_kill)} after the kill); "
        f"both instances back on Redis {returned:.1f}s after it returned"
    )


def test_rate_limit_store_down_fails_closed_when_configured(
    database_url: str, engine: Engine, data: Data, tmp_path: Path
) -> None:
    admins = [data.user(user_type="admin") for _ in range(20)]
    job = data.job(status="queued")
    server = RedisServer(free_port())
    env = {"RATE_LIMIT": "1000 per minute", "RATE_LIMIT_STORAGE_URI": server.url, "RATE_LIMIT_FAIL_OPEN": "false"}
    load: MultiAdminLoad | None = None
    in_flight: dict[str, Any] = {}
    try:
        with run_service(database_url, tmp_path, env=env) as svc:
            load = MultiAdminLoad([svc], admins)
            load.start()
            time.sleep(1.0)

            # One request is past the limiter (counted in Redis) and waiting in the view when Redis
            # dies; the limiter reads the store again for its response headers.
            def ask() -> None:
                in_flight["response"] = limited_get(svc, data.user(user_type="admin"), f"/admin/jobs/{job['id']}")

            with table_locked(engine, "archive.analysis_jobs"):
                asking = threading.Thread(target=ask, daemon=True)
                asking.start()
                wait_until(lambda: waiting_for_lock(engine, "admin-service") >= 2, 5, "the requests waiting in the view")
                server.process.kill()
                server.process.wait(5)
                killed = time.monotonic()
            asking.join(10)
            time.sleep(2.0)
            # /health is not rate limited: the instance is alive, just refusing admin requests.
            assert requests.get(f"{svc.url}/health", timeout=5).status_code == 200
            restarting = time.monotonic()
            server = RedisServer(server.port)
            back = time.monotonic()
            wait_until(
                lambda: load.answers[-1].sent > back and load.answers[-1].status == 200,
                15,  # type: ignore[union-attr]
                "admin requests served again",
            )
            time.sleep(1.0)
            load.stop()
            log = svc.log()
    finally:
        if load is not None:
            load.halt.set()
        server.stop()
    # The in-flight one: the store's failure after the view is a 503 as well, never a 500.
    response = in_flight["response"]
    assert response.status_code == 503 and outage_problem(response) == "", (response.status_code, response.text)
    answers = load.answers
    assert [a for a in answers if a.problem] == [], "200, or 503 in the envelope with Retry-After: nothing else"
    assert all(a.status == 200 for a in answers if a.done < killed), "served while Redis was up"
    down = [a for a in answers if killed + 0.2 <= a.sent and a.done <= restarting]
    assert down and all(a.status == 503 for a in down), "fail closed: refused while Redis was down"
    assert max(a.seconds for a in down) < 2.5, "refused promptly, not after a hang"
    failing_after = [a for a in answers if a.sent >= back and a.status != 200]
    recovered = max((a.done for a in failing_after), default=back) - back
    assert all(a.status == 200 for a in answers if a.sent >= back + recovered)
    assert "rate-limit storage unreachable" in log
    print(
        f"\nRedis down, fail closed: {len(down)} requests refused with 503 (slowest {max(a.seconds for a in down):.2f}s), "
        f"the one in flight too; served again {recovered:.2f}s after Redis returned"
    )


# --- SIGTERM with a request in flight ---------------------------------------------------------------


def test_sigterm_lets_an_in_flight_request_finish_and_hands_capture_over(
    database_url: str, engine: Engine, data: Data, settings: Settings, tmp_path: Path
) -> None:
    """The in-flight part of SIGTERM (streams ending with a retry hint is
    test_sigterm_ends_streams_promptly_and_another_instance_takes_over): a request blocked in
    the database when the signal comes is answered in full, and capture leadership moves to
    the other instance even though the leader was itself stuck in a query at the time."""
    reset_event_log(engine, settings)
    admin = data.user(user_type="admin")
    token = token_for(admin)
    job = data.job(status="completed", completed_at=utcnow(), user=admin)
    jobs = Jobs(engine)
    env = {**ENV, "GRACEFUL_TIMEOUT": "20"}
    with run_service(database_url, tmp_path, env=env) as a:
        wait_log(a, LEADER)
        with (
            run_service(database_url, tmp_path, env=env) as b,
            SSEClient(a.url, token=token, params=UPDATES_ONLY) as on_a,
            SSEClient(b.url, token=token, params=UPDATES_ONLY) as on_b,
        ):
            url = f"{a.url}/admin/jobs/{job['id']}"
            # A browser's idle keep-alive connection (KEEPALIVE_S is 75 s, longer than GRACEFUL_TIMEOUT).
            idle = requests.Session()
            assert idle.get(url, headers=bearer(token), timeout=5).status_code == 200  # the admin is known now
            answer: dict[str, Any] = {}

            def ask() -> None:
                started = time.monotonic()
                try:
                    answer["response"] = requests.get(url, headers=bearer(token), timeout=30)
                except requests.RequestException as exc:
                    answer["error"] = exc
                answer["seconds"] = time.monotonic() - started

            with table_locked(engine, "archive.analysis_jobs"):
                # Every read of the jobs table now waits, the request's and the leader's capture pass.
                asking = threading.Thread(target=ask, daemon=True)
                asking.start()
                wait_until(lambda: waiting_for_lock(engine, "admin-service") == 1, 5, "the request to wait for the lock")
                wait_until(lambda: waiting_for_lock(engine, "admin-service-capture") == 1, 5, "the leader's capture pass to wait")
                sent = time.monotonic()
                a.process.send_signal(signal.SIGTERM)
                on_a.wait_ended(3)  # the worker is shutting down (its streams end at once)...
                assert on_a.retries[-1] <= 1000
                assert "response" not in answer and "error" not in answer, "...and the request is still in flight"
                time.sleep(max(0.0, sent + 1.5 - time.monotonic()))
            released = time.monotonic()
            asking.join(15)
            wait_log(b, LEADER, 10)
            took_over = time.monotonic() - released
            a.process.wait(15)
            exited = time.monotonic() - sent

            assert "error" not in answer, answer.get("error")
            response = answer["response"]
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["success"] is True
            assert (body["data"]["id"], body["data"]["job_id"], body["data"]["status"]) == (job["id"], job["job_id"], "completed")
            assert body["data"]["user"]["email"] == admin["email"]
            assert answer["seconds"] >= 1.5, "it was in flight across the signal"
            log = a.log()
            assert "graceful timeout" not in log.lower()
            assert "capture leadership released" in log

            # The in-flight request's connection was closed after its answer and the idle one at
            # once: a client holding either would keep the draining worker up for `keepalive`, or
            # until GRACEFUL_TIMEOUT cut it.
            assert exited < 5, f"the instance exited {exited:.1f}s after SIGTERM"
            idle.close()
            after = jobs.insert()
            on_b.wait_for(for_job(after), 5, "a change captured by the new leader")
    print(
        f"\nSIGTERM with a request in flight: answered 200 after {answer['seconds']:.2f}s (lock held 1.5s after the signal); "
        f"instance exited {exited:.2f}s after SIGTERM; the other instance led capture {took_over:.2f}s after the lock was released"
    )


# --- clients that vanish or stop reading --------------------------------------------------------

WARM_UP, ROUNDS = 2, 6  # rounds that warm up, and rounds in all
VANISHING = 240  # per round: clients that go away (close without reading, after the head, or reset)
STALLED = 10  # per round: clients that stop reading (a tiny receive window, never read)
READERS = 2  # live clients reading throughout
# Per round ~7.7 MB of events, more than a stalled socket's buffers take. 8 KB each: a stalled
# stream holds up to twice SUBSCRIBER_QUEUE_MAX events in its write buffers until it is cut
# off; with larger events those transient buffers moved the heap's high-water mark by 10-18 MB
# from one round to the next, burying any real growth in noise.
BURSTS, PER_BURST, BIG = 16, 60, 8_000
OVERLAP_S = 1  # CAPTURE_OVERLAP_S here: capture re-reads (holds in memory) the rows of the last second only


def stream_request(token: str) -> bytes:
    return f"GET /admin/jobs/stream?events=job-update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


def raw_stream(port: int, token: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window it offers
    sock.connect(("127.0.0.1", port))
    sock.sendall(stream_request(token))
    return sock


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def write_big_jobs(engine: Engine, round_: int, bursts: int = BURSTS, per_burst: int = PER_BURST) -> None:
    """Large failed jobs in bursts: one capture pass and one publish round each."""
    with engine.connect() as conn:
        for burst in range(bursts):
            conn.execute(
                text(
                    """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, error_message, created_at, updated_at)
                       SELECT gen_random_uuid(), 'big-' || :r || '-' || :b || '-' || g, gen_random_uuid(), 'failed',
                              repeat('x', :size), now(), now()
                       FROM generate_series(1, :n) AS g"""
                ),
                {"r": round_, "b": burst, "size": BIG, "n": per_burst},
            )
            conn.commit()
            time.sleep(0.1)


def test_clients_that_vanish_or_stop_reading_are_dropped_without_memory_growth(
    database_url: str, engine: Engine, data: Data, settings: Settings, tmp_path: Path
) -> None:
    reset_event_log(engine, settings)
    admin = data.user(user_type="admin")
    token = token_for(admin)
    env = {**ENV, "SUBSCRIBER_QUEUE_MAX": "20", "LOG_LEVEL": "WARNING", "CAPTURE_OVERLAP_S": str(OVERLAP_S)}
    readers: StreamFleet | None = None
    rss: list[float] = []
    with run_service(database_url, tmp_path, env=env) as svc:
        [worker] = worker_pids(svc)
        started_rss = rss_mb(worker)

        def gauges() -> tuple[float, float]:
            samples = scrape(svc.url)
            return value(samples, f"{P}_sse_clients"), value(samples, f"{P}_live_subscribers")

        written = 0  # events the live readers must get
        try:
            for round_ in range(ROUNDS):
                live = READERS if readers is not None else 0
                stalled = [raw_stream(svc.port, token, rcvbuf=2048) for _ in range(STALLED)]
                vanishing = [raw_stream(svc.port, token) for _ in range(VANISHING)]
                for i, sock in enumerate(vanishing):
                    if i % 3:  # two thirds take the response head first: they were subscribed
                        sock.settimeout(5)
                        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                    if i % 3 == 2:  # and of those, half vanish with a reset instead of a FIN
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                if round_ == 0:
                    # The whole round in one statement: the largest batch capture, the tail and the
                    # streams ever handle at once, so the heap reaches its high-water mark in the
                    # warm-up (a later pass that happened to take several bursts would otherwise look
                    # like growth). Before the live readers connect: a burst this size is more than a
                    # fresh reader's socket takes before SUBSCRIBER_QUEUE_MAX (20 here) events wait.
                    write_big_jobs(engine, round_, 1, BURSTS * PER_BURST)
                else:
                    write_big_jobs(engine, round_)
                    written += BURSTS * PER_BURST
                wrote = time.monotonic()
                ports = [sock.getsockname()[1] for sock in stalled]
                wait_until(
                    lambda: all(server_side_state(svc.port, port) != ESTABLISHED for port in ports),  # noqa: B023
                    30,
                    f"the server to drop every stalled client of round {round_}",
                    every=0.5,
                )
                for sock in stalled:
                    sock.close()
                wait_until(lambda n=live: gauges() == (n, n), 15, "the gauges back to the live readers")  # type: ignore[misc]
                if readers is not None:
                    wait_until(
                        lambda n=written, fleet=readers: all(len(ids) == n for ids in fleet.received()),
                        20,  # type: ignore[misc]
                        "the readers to receive every event",
                    )
                # Measured once capture has stopped re-reading this round's rows (its overlap window):
                # each pass holds them all in memory for a moment.
                time.sleep(max(0.5, wrote + OVERLAP_S + 1 - time.monotonic()))
                rss.append(rss_mb(worker))
                if readers is None:
                    readers = StreamFleet(svc.url, token, READERS, UPDATES_ONLY)
                    readers.start()
                    wait_until(lambda: gauges() == (READERS, READERS), 10, "the gauges to count the readers")
        finally:
            if readers is not None:
                readers.stop()
        assert worker_pids(svc) == [worker], "the same worker throughout"
        log = svc.log()

    assert readers is not None
    assert readers.reopened == 0 and not readers.others, f"live readers dropped: reopened {readers.reopened}, {readers.others}"
    assert all(len(set(ids)) == written for ids in readers.received())
    assert log.count("dropped a slow subscriber") >= ROUNDS * STALLED
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
    # Against the warm-up's high-water mark. Capture's bounded caches still fill by ~0.4 MB a
    # round (20,000 and 50,000 entries), within the margin.
    warm = max(rss[:WARM_UP])
    assert max(rss[WARM_UP:]) <= warm * 1.10, f"worker RSS grew from {warm:.1f} MB after the warm-up: {rss}"
    print(
        f"\nslow and vanishing clients: {ROUNDS} rounds x ({VANISHING} vanishing + {STALLED} stalled) with "
        f"{READERS} live readers; {ROUNDS * BURSTS * PER_BURST} events of {BIG // 1000} KB ({written} to each reader); drops logged {log.count('dropped a slow subscriber')}; "
        f"worker RSS {started_rss:.1f} MB at start, after each round {[round(r, 1) for r in rss]} MB "
        f"(highest after the warm-up: {(max(rss[WARM_UP:]) / warm - 1) * 100:+.1f}% of its high-water mark)"
    )
