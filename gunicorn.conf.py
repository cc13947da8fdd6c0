"""gunicorn settings for production and the embedded default (env overrides in brackets)."""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3007')}"
worker_class = "gevent"
# Two workers per core is plenty for an I/O-bound gevent app [WEB_CONCURRENCY].
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
# Each SSE stream or socket holds one greenlet: leave room for ten thousand.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "20000"))
timeout = 30
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "10"))
# Idle keep-alive connections stay open this long [KEEPALIVE_S]. Longer than a proxy's or
# client's own idle timeout (nginx, AWS ALB: 60 s), so that the client side always closes
# first: a server closing at the very moment a client reuses the connection resets that
# request (the soak saw 1 in 18,000 with 5 s).
keepalive = int(os.environ.get("KEEPALIVE_S", "75"))
# No preload: each worker must patch psycopg2 and open its own pool after forking.
preload_app = False
accesslog = None  # the app writes one JSON access line per request
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
limit_request_line = 8190
limit_request_field_size = 16384


def post_fork(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    # psycopg2 blocks the whole worker unless it yields to gevent while waiting on I/O.
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


def post_worker_init(worker):
    tune_garbage_collector()
    # On SIGTERM gunicorn only flips worker.alive and waits graceful_timeout for requests;
    # endless SSE streams would hold it that long. End them at once with a retry hint and
    # give up capture leadership so another instance takes over.
    import threading
    import time

    flask_app = getattr(worker.wsgi, "flask_app", worker.wsgi)
    from admin_service.services import EXTENSION

    if EXTENSION not in flask_app.extensions:
        return
    live = flask_app.extensions[EXTENSION].runtime
    connections = track_connections(worker)

    def watch() -> None:
        while worker.alive:
            time.sleep(0.2)
        live.shutdown()
        # Keep-alive would hold the draining worker: an idle connection waits `keepalive` (75 s,
        # longer than graceful_timeout) for its client's next request, and so does the connection
        # of a request in flight at SIGTERM once answered. Close them once their answers are out:
        # new connections close after one response, and the reading side of the known ones is shut,
        # so a handler waiting for a next request sees the end at once (answers still go out).
        worker.cfg.set("keepalive", 0)
        for sock in list(connections):
            shut_reading(sock)

    threading.Thread(target=watch, name="live-shutdown-watch", daemon=True).start()


def track_connections(worker):
    """The client sockets this worker is serving (a weak set: a connection's handler owns it)."""
    import weakref

    connections = weakref.WeakSet()
    app = worker.wsgi

    def tracking_app(environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            connections.add(sock)
        return app(environ, start_response)

    # gunicorn calls worker.wsgi for every request: wrap it (the Flask app stays reachable as before).
    tracking_app.flask_app = getattr(app, "flask_app", app)
    worker.wsgi = tracking_app
    return connections


def shut_reading(sock) -> None:
    import socket
    from contextlib import suppress

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
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


# Prometheus multiprocess mode: every worker writes its samples into one folder, and a scrape
# of /metrics answered by any worker reads them all. The variable must be set before the
# workers import prometheus_client (they fork from this process, no preload).
# A folder made here is removed on exit (remembered in the environment: a reload re-reads this file).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["ADMIN_SERVICE_METRICS_TMPDIR"] = tempfile.mkdtemp(
        prefix="admin-service-metrics-"
    )


def on_starting(server):  # noqa: ARG001
    # Samples of an earlier run in a given folder would be counted again: start empty.
    import glob

    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):  # noqa: ARG001
    # A dead worker's live gauges (clients, pool, leadership) must stop counting.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ARG001
    if os.environ.get("ADMIN_SERVICE_METRICS_TMPDIR") == os.environ["PROMETHEUS_MULTIPROC_DIR"]:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
