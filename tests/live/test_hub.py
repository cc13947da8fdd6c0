"""The hub: it routes every event to its subscribers and drops the one that cannot keep up,
in-process and under gunicorn with a stalled client."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, text

from admin_service import metrics
from admin_service.live.hub import EventFilter, Hub, LiveEvent
from tests.support.factories import Data
from tests.support.live import ENV, ESTABLISHED, UPDATES_ONLY, assert_no_duplicates, server_side_state, updates, wait_until
from tests.support.service import run_service, worker_pids
from tests.support.sse_client import SSEClient, SSEEvent
from tests.support.tokens import token_for


def test_dropped_subscribers_are_counted() -> None:
    hub = Hub(queue_max=1)
    hub.subscribe(EventFilter())
    before = metrics.SUBSCRIBERS_DROPPED._value.get()
    for i in range(3):
        hub.publish(LiveEvent("job-update", {"event": "updated", "job": {}}, i + 1))
    assert metrics.SUBSCRIBERS_DROPPED._value.get() == before + 1


def test_a_stalled_subscriber_is_dropped_and_others_get_everything(
    database_url: str, alone: Data, admin: dict[str, Any], engine: Engine, tmp_path: Path
) -> None:
    token = token_for(admin)
    # ~6 MB of events: more than the kernel buffers for the stalled connection (the server's
    # send buffer grows to 4 MB here), so its writes block and its queue of 5 fills.
    bursts, per_burst, size = 16, 50, 8000
    count = bursts * per_burst
    with run_service(database_url, tmp_path, env={**ENV, "SUBSCRIBER_QUEUE_MAX": "5"}) as svc:
        workers = worker_pids(svc)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a tiny window
        stalled.connect(("127.0.0.1", svc.port))
        stalled.sendall(
            f"GET /admin/jobs/stream?events=job-update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        with SSEClient(svc.url, token=token, params=UPDATES_ONLY) as reader:
            time.sleep(0.5)  # both subscribed

            def write() -> None:  # large events, in bursts: one capture pass and one publish round each
                with engine.connect() as conn:
                    for burst in range(bursts):
                        conn.execute(
                            text(
                                """INSERT INTO archive.analysis_jobs (id, job_id, user_id, status, error_message, created_at, updated_at)
                                   SELECT gen_random_uuid(), 'big-' || :b || '-' || g, gen_random_uuid(), 'failed', repeat('x', :size),
                                          now(), now()
                                   FROM generate_series(1, :n) AS g"""
                            ),
                            {"b": burst, "size": size, "n": per_burst},
                        )
                        conn.commit()
                        time.sleep(0.05)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()  # while this thread reads, as a live client does
            got: list[SSEEvent] = []
            deadline = time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline and not reader.ended:
                got += updates(reader.collect(0.5))
            writer.join(10)
            assert len(got) == count, "the reading subscriber receives every event"
            assert_no_duplicates(got)
            assert not [e for e in reader.events if e.name == "error"]

            # The stalled one was dropped, and the server closed its end of the connection...
            client_port = stalled.getsockname()[1]
            wait_until(
                lambda: server_side_state(svc.port, client_port) != ESTABLISHED,
                10,
                "the server to close the stalled connection",
                every=0.2,
            )
            assert svc.log().count("dropped a slow subscriber") == 1
            # ...so what the stalled client finds, once it reads, ends short of the whole stream.
            stalled.settimeout(10)
            received = b""
            while chunk := stalled.recv(1 << 20):
                received += chunk
            assert 0 < received.count(b"event: job-update") < count
            # The worker stayed healthy: the same process, answering at once, without errors.
            started = time.monotonic()
            assert requests.get(f"{svc.url}/health", timeout=2).status_code == 200
            assert time.monotonic() - started < 1
            assert worker_pids(svc) == workers
            assert "[ERROR]" not in svc.log()
        stalled.close()
