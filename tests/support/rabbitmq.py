"""RabbitMQ for the action tests: the machine's broker (TEST_AMQP_URL, else 127.0.0.1:5672), or a
private rabbitmq-server node of the tests' own (a port, a data folder, no plugins) that a test
may stop and start; and `Owner`, a consumer that plays the platform's owner service.

Where no broker answers, the `amqp_url` fixture starts a private node; without rabbitmq-server
installed it fails with one line saying what to install."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import psycopg2

from admin_service.db.tables import JOBS_TABLE
from admin_service.live.connection import libpq_dsn

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MISSING = (
    "RabbitMQ does not answer at {url} and rabbitmq-server is not installed: "
    "apt-get install rabbitmq-server (or set TEST_AMQP_URL to a reachable broker)"
)


def node_port() -> int:
    """A free port whose neighbour 20000 up (the node's Erlang distribution port) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if all(_free(p) for p in (port, port + 20_000)):
            return port
    raise RuntimeError("no free port pair for a RabbitMQ node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def answers(url: str) -> bool:
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
        return True
    except (pika.exceptions.AMQPError, OSError):
        return False


class RabbitNode:
    """A rabbitmq-server node of our own on `port`, its data in `folder` (kept across stop and
    start, so durable queues and persistent messages survive as on a real restart)."""

    def __init__(self, port: int, folder: Path) -> None:
        if shutil.which("rabbitmq-server") is None:
            raise RuntimeError(MISSING.format(url=f"127.0.0.1:{port}"))
        self.port = port
        self.folder = folder
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        self.name = f"admin-service-test-{port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("mnesia", "log"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "enabled_plugins").write_text("[].\n")
        # The machine's rabbitmq.conf names its own listener: this node reads only this file.
        (folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n")
        if os.geteuid() == 0:
            shutil.chown(folder, "rabbitmq")  # as root the server script runs as the rabbitmq user
            for path in folder.rglob("*"):
                shutil.chown(path, "rabbitmq")

    def start(self, timeout: float = 90) -> None:
        env = {
            **os.environ,
            "HOME": str(self.folder),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.folder / "feature_flags"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }
        log = (self.folder / "server.out").open("ab")
        self.process = subprocess.Popen(
            ["rabbitmq-server"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "server.out").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"rabbitmq-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.3)

    def kill(self) -> None:
        """The broker dies at once (SIGKILL), as in a crash; what it confirmed is on disk and
        comes back with the next start."""
        self.stop(signal.SIGKILL)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Stop the node: its Erlang VM by the pid it wrote (as root the server script runs it
        through `su`, outside our process group; SIGTERM is a clean shutdown), then the script."""
        process, self.process = self.process, None
        if process is None:
            return
        pid_file = self.folder / "pid"
        beam = int(pid_file.read_text().strip()) if pid_file.exists() and pid_file.read_text().strip() else None
        if beam is not None:
            try:
                os.kill(beam, how)
            except ProcessLookupError:
                beam = None
        deadline = time.monotonic() + 30
        while beam is not None and Path(f"/proc/{beam}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if beam is not None and Path(f"/proc/{beam}").exists():
            os.kill(beam, signal.SIGKILL)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pid_file.unlink(missing_ok=True)


class Owner:
    """Plays the owner service: consumes the retry commands from a queue bound to the service's
    exchange and routing key, and re-queues each job row as the platform does (failed -> queued),
    once per idempotency key; counts every delivery per key and every re-queue per job."""

    def __init__(self, amqp_url: str, database_url: str, exchange: str, routing_key: str, *, requeue: bool = True) -> None:
        self.amqp_url = amqp_url
        self.requeue = requeue  # False: takes the command and does nothing (a broken owner)
        self.database_url = database_url
        self.exchange = exchange
        self.routing_key = routing_key
        self.queue = f"owner-{uuid.uuid4().hex[:8]}"
        self.deliveries: Counter[str] = Counter()  # idempotency key -> messages received
        self.published: Counter[str] = Counter()  # of them, first deliveries (the broker's own redeliveries aside)
        self.requeued: Counter[str] = Counter()  # job row id -> times the owner re-queued it
        self.keys_of_job: dict[str, set[str]] = {}
        self.messages: list[dict[str, Any]] = []
        self.properties: list[Any] = []
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def declare(self) -> None:
        """The exchange, a durable queue and its binding, as the platform has them."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = connection.channel()
        channel.exchange_declare(self.exchange, "direct", durable=True)
        channel.queue_declare(self.queue, durable=True)
        channel.queue_bind(self.queue, self.exchange, self.routing_key)
        connection.close()

    def start(self) -> Owner:
        self.declare()
        self._thread.start()
        assert self._ready.wait(30), "the owner consumer did not start"
        return self

    def _run(self) -> None:
        db = psycopg2.connect(libpq_dsn(self.database_url))
        db.autocommit = True
        while not self._stop.is_set():
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.3)  # the broker is down: keep trying, as a consumer does
                continue
            try:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=50)
                channel.basic_consume(self.queue, lambda ch, method, props, body: self._handle(db, ch, method, props, body))
                self._ready.set()
                while not self._stop.is_set():
                    connection.process_data_events(0.2)
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.3)
        db.close()

    def _handle(self, db: Any, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        command = json.loads(body)
        key = command["idempotency_key"]
        with self._lock:
            self.deliveries[key] += 1
            if not method.redelivered:  # a redelivery is the broker's (an ack it lost), not another send
                self.published[key] += 1
            self.messages.append(command)
            self.properties.append(properties)
            first = key not in self._done
        if first and self.requeue:
            with db.cursor() as cur:
                for job in command["job_row_ids"]:
                    cur.execute(
                        f"UPDATE {JOBS_TABLE} SET status = 'queued', error_message = NULL, completed_at = NULL, "
                        "retry_count = retry_count + 1, updated_at = now() WHERE id = %s AND status = 'failed'",
                        (job,),
                    )
                    with self._lock:
                        if cur.rowcount:
                            self.requeued[job] += 1
                        self.keys_of_job.setdefault(job, set()).add(key)
            with self._lock:
                self._done.add(key)
        channel.basic_ack(method.delivery_tag)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
