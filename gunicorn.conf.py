"""gunicorn settings for production and the embedded default (env overrides in brackets).

Settings only: what happens at start, fork, worker start and exit is admin_service/lifecycle.py.
"""

import os

from admin_service import lifecycle
from admin_service.cpus import usable_cpus

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3007')}"
# gunicorn's gevent worker with a deadline for request heads (REQUEST_HEAD_TIMEOUT_S, 10 s) and
# its own error answers in the JSON envelope: admin_service/http_worker.py.
worker_class = "admin_service.http_worker.HttpWorker"
# One worker per CPU this process may use (affinity, cgroup quota: not the host's cores), at
# least 2, is plenty for an I/O-bound gevent app [WEB_CONCURRENCY].
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, usable_cpus())))
# A per-process rate-limit store (memory://) would grant each worker the whole limit: refused.
lifecycle.refuse_per_process_limits(workers)
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
# Proxy headers are the app's to believe or not (TRUST_PROXY, werkzeug's ProxyFix): gunicorn
# trusts none. Its defaults believe X-Forwarded-Proto/-Ssl/-Protocol (https: HSTS) and a
# SCRIPT_NAME header (another route) from any loopback peer, whatever TRUST_PROXY says.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""

# Master: the Prometheus multiprocess folder (PROMETHEUS_MULTIPROC_DIR, a temporary one unless given).
on_starting = lifecycle.on_starting
child_exit = lifecycle.child_exit
on_exit = lifecycle.on_exit
# Each worker: psycopg2 made cooperative, the garbage collector tuned, streams ended at shutdown.
post_fork = lifecycle.post_fork
post_worker_init = lifecycle.post_worker_init
worker_exit = lifecycle.worker_exit
