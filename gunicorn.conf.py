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
keepalive = 5
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
    # On SIGTERM gunicorn only flips worker.alive and waits graceful_timeout for requests;
    # endless SSE streams would hold it that long. End them at once with a retry hint and
    # give up capture leadership so another instance takes over.
    import threading
    import time

    flask_app = getattr(worker.wsgi, "flask_app", worker.wsgi)
    live = flask_app.extensions.get("admin_service.live")
    if live is None:
        return

    def watch() -> None:
        while worker.alive:
            time.sleep(0.2)
        live.shutdown()

    threading.Thread(target=watch, name="live-shutdown-watch", daemon=True).start()
