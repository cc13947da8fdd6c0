"""What the service does at gunicorn's turning points; gunicorn.conf.py holds the settings and
hands its hooks to these functions.

- The master: the Prometheus multiprocess folder (chosen and emptied at start, a dead worker's
  live gauges dropped, removed at exit when it was made here); the folder of the workers'
  Socket.IO sockets (live/socketio/affinity.py), made at start and removed at exit.
- Each worker: psycopg2 made cooperative (post_fork); the garbage collector tuned, its worker
  socket listening (Engine.IO sessions forwarded by its siblings) and a watcher that ends the
  live streams at once on shutdown (post_worker_init); at exit, the live loops
  given time to end, so a capture leader hands over cleanly (worker_exit).

gunicorn.conf.py imports this module in the master, before any worker forks and so before a
worker's gevent monkey-patching. So it imports only the standard library at module level (whole
modules, whose attributes gevent patches in place), never the app, psycopg2, prometheus_client
or gevent: each hook imports those when it runs, in the process that needs them.
"""

from __future__ import annotations

import gc
import glob
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("admin_service.lifecycle")

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The folder this module made (removed on exit); one given in PROMETHEUS_MULTIPROC_DIR is left alone.
OWN_METRICS_DIR = "ADMIN_SERVICE_METRICS_TMPDIR"
# = admin_service.live.socketio.affinity.SOCKET_DIR_ENV (not imported: this module imports no app
# code at module level); tests/live/socketio/test_socketio_workers.py checks that they agree.
WORKER_SOCKETS_DIR = "ADMIN_SERVICE_WORKER_SOCKETS"
SHUTDOWN_POLL_S = 0.2
# How long an exiting worker waits for its live loops (capture, tail, stats) to end: a loop in a
# database call when SIGTERM came ends after it returns (a poll interval at most, or a query).
LOOPS_EXIT_S = 3.0


class WorkerConfig(Protocol):
    def set(self, name: str, value: Any) -> None: ...


class Worker(Protocol):
    """What the hooks use of gunicorn's worker (gunicorn ships no type hints)."""

    alive: bool
    pid: int
    cfg: WorkerConfig
    wsgi: WSGIApplication


# --- master --------------------------------------------------------------------------------


def refuse_per_process_limits(workers: int) -> None:
    """RATE_LIMIT and AUTH_FAILURE_LIMIT are per deployment: with memory:// every worker would
    count on its own and grant the whole limit, so several workers on it are refused at start."""
    store = os.environ.get("RATE_LIMIT_STORAGE_URI", "")
    if workers > 1 and store.startswith("memory://"):
        raise SystemExit(
            f"RATE_LIMIT_STORAGE_URI={store} counts per process, and {workers} workers would each grant "
            "the whole RATE_LIMIT: use database:// (the default) or redis://, or WEB_CONCURRENCY=1"
        )


def on_starting(server: object) -> None:
    """Prometheus multiprocess mode: every worker writes its samples into one folder, and a
    scrape of /metrics answered by any worker reads them all. Set here, in the master before
    the first fork, because workers read the variable when they import prometheus_client."""
    if not os.environ.get(METRICS_DIR):
        os.environ[METRICS_DIR] = os.environ[OWN_METRICS_DIR] = tempfile.mkdtemp(prefix="admin-service-metrics-")
    # Samples of an earlier run in a given folder would be counted again: start empty.
    for path in glob.glob(os.path.join(os.environ[METRICS_DIR], "*.db")):
        os.remove(path)
    # Each worker listens on a socket here for its siblings' forwarded Engine.IO requests. One
    # folder per master (0700), so that two instances on one host never meet.
    os.environ[WORKER_SOCKETS_DIR] = tempfile.mkdtemp(prefix="admin-service-workers-")


def child_exit(server: object, worker: Worker) -> None:
    """A dead worker's live gauges (clients, pool, leadership) must stop counting."""
    # Here, not at module level: the master must not hold prometheus_client's values before forking.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: object) -> None:
    own = os.environ.get(OWN_METRICS_DIR)
    if own and own == os.environ.get(METRICS_DIR):
        shutil.rmtree(own, ignore_errors=True)
    sockets = os.environ.get(WORKER_SOCKETS_DIR)
    if sockets:
        shutil.rmtree(sockets, ignore_errors=True)


# --- each worker -----------------------------------------------------------------------------


def post_fork(server: object, worker: Worker) -> None:
    # psycopg2 blocks the whole worker unless it yields to gevent while waiting on I/O; and a
    # server that stops answering must not hold a request forever (db/green.py: a client-side
    # deadline on every wait, DB_STATEMENT_TIMEOUT_MS + 1 s).
    from admin_service.config import load_settings
    from admin_service.db import green

    green.install(load_settings().db_statement_timeout_ms)


def post_worker_init(worker: Worker) -> None:
    """Tune the collector, then watch for shutdown: on SIGTERM gunicorn only flips
    worker.alive and waits graceful_timeout for requests, and endless SSE streams would hold
    it that long. End them at once with a retry hint and give up capture leadership so that
    another instance takes over."""
    tune_garbage_collector()
    # Here, not at module level: the master has no use for Flask.
    from flask import Flask

    from admin_service.live.socketio import AFFINITY
    from admin_service.services import EXTENSION, services

    # wsgi.py serves Socket.IO's app around the Flask app (which it keeps as `flask_app`).
    flask_app = getattr(worker.wsgi, "flask_app", worker.wsgi)
    if not isinstance(flask_app, Flask) or EXTENSION not in flask_app.extensions:
        return
    runtime = services(flask_app).runtime
    connections = track_connections(worker)
    stop_worker_socket = serve_worker_socket(worker, flask_app.extensions.get(AFFINITY))

    def watch() -> None:
        while worker.alive:
            time.sleep(SHUTDOWN_POLL_S)
        stop_worker_socket()
        runtime.shutdown()
        # Keep-alive would hold the draining worker: an idle connection waits `keepalive` (75 s,
        # longer than graceful_timeout) for its client's next request, and so does the connection
        # of a request in flight at SIGTERM once answered. Close them once their answers are out:
        # new connections close after one response, and the reading side of the known ones is shut,
        # so a handler waiting for a next request sees the end at once (answers still go out).
        worker.cfg.set("keepalive", 0)
        for sock in list(connections):
            shut_reading(sock)

    threading.Thread(target=watch, name="live-shutdown-watch", daemon=True).start()


def worker_exit(server: object, worker: Worker) -> None:
    """In the worker, once its requests are done: let the live loops end before the process
    does. Without this the exit raced a capture leader still returning from a query, which then
    never released its lock itself nor logged that it had (the kernel closed the connection)."""
    from flask import Flask

    from admin_service.services import EXTENSION, services

    flask_app = getattr(worker.wsgi, "flask_app", worker.wsgi)
    if isinstance(flask_app, Flask) and EXTENSION in flask_app.extensions:
        runtime = services(flask_app).runtime
        if runtime.stop.is_set() and not runtime.wait_stopped(LOOPS_EXIT_S):
            log.warning("live loops still running after %.0f s; exiting anyway", LOOPS_EXIT_S)
        # This worker's places among the per-user caps are free at once, not a lease later.
        runtime.caps.leave()


def serve_worker_socket(worker: Worker, affinity: Any) -> Callable[[], None]:
    """Listen on this worker's socket (live/socketio/affinity.py): Engine.IO requests for this
    worker's sessions that a sibling received come in here, and gunicorn's own request handling
    serves them, as if this worker had accepted the connection. Returns how to stop."""
    path = getattr(affinity, "own_socket_path", None)
    if path is None:  # not under our master, or no Socket.IO
        return lambda: None
    from gevent.server import StreamServer  # type: ignore[import-untyped, unused-ignore]

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    handle = getattr(worker, "handle")  # noqa: B009  (gunicorn's worker: handle(listener, client, addr))
    server = StreamServer(listener, handle=lambda client, addr: handle(listener, client, addr))
    server.start()

    def stop() -> None:
        server.close()
        with suppress(OSError):
            os.remove(path)

    return stop


def track_connections(worker: Worker) -> weakref.WeakSet[socket.socket]:
    """The client sockets this worker is serving (a weak set: a connection's handler owns it)."""
    connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
    app = worker.wsgi

    # A plain function (not a class with __call__): it runs for every request.
    def tracking_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            connections.add(sock)
        return app(environ, start_response)

    # gunicorn calls worker.wsgi for every request: wrap it (the Flask app stays reachable as before).
    tracking_app.flask_app = getattr(app, "flask_app", app)  # type: ignore[attr-defined]
    worker.wsgi = tracking_app
    return connections


def shut_reading(sock: socket.socket) -> None:
    # Through a duplicate of the descriptor, as live/sse.py does: acting on gevent's own socket
    # object would cancel a pending operation of its handler with EBADF.
    with suppress(OSError), socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
        dup.shutdown(socket.SHUT_RD)


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic-GC passes for a worker holding thousands of streams.

    A fan-out to 10,000 SSE streams allocates tens of thousands of short-lived objects
    (timers, callbacks); with the default gen-0 threshold of 700 they were collected, and
    promoted, dozens of times per event, and the full passes that followed walked every
    stream's objects: the profile of that fan-out showed over a third of the worker's time
    in gc_collect_main. The app's own start-up objects (modules, routes, schemas) never
    become garbage: freeze them out of every pass.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
