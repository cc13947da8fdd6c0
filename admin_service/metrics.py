"""Prometheus metrics at GET /metrics (prometheus-client).

Under gunicorn every worker is its own process: the master's on_starting hook (lifecycle.py) sets PROMETHEUS_MULTIPROC_DIR
before the workers start, each worker writes its samples there, and a scrape answered by any
worker reads them all (prometheus-client's multiprocess mode). Without that variable (tests'
in-process apps, `flask run`) the samples are this process's own.

Access: METRICS_ENABLED=false removes the route (404). With METRICS_TOKEN set a scrape needs
`Authorization: Bearer <METRICS_TOKEN>`; without it only direct loopback requests are served
(a request forwarded by a proxy, i.e. with any forwarding header: Forwarded, X-Forwarded-*,
X-Real-IP, Via, is refused, whatever TRUST_PROXY says).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

from admin_service.auth import unauthorized
from admin_service.errors import ApiError
from admin_service.jobs.status import STATUSES
from admin_service.names import CAPTURE_MODES

if TYPE_CHECKING:
    from admin_service.config import Settings
    from admin_service.jobs.stats import SharedStats

log = logging.getLogger("admin_service.metrics")

PREFIX = "admin_service"

# Every label value comes from a known, small set: a value a client chooses (gunicorn accepts
# any 3-20-letter method) would add series to every metric that has it, unauthenticated.
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
UNMATCHED = "<unmatched>"


def bounded(value: str, known: frozenset[str] | tuple[str, ...]) -> str:
    """`value` when it is one of `known`, else "other"."""
    return value if value in known else OTHER


def request_labels(method: str, rule: str | None, status: int) -> tuple[str, str, str]:
    """(method, endpoint, status) of a request: a known method, the route's rule (the app's
    own, finite) or "<unmatched>", an HTTP status code (100-599) or "other"."""
    return (bounded(method, METHODS), rule if rule is not None else UNMATCHED, str(status) if 100 <= status <= 599 else OTHER)


REQUESTS = Counter(f"{PREFIX}_http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"])
LATENCY = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request (for streams: until the response starts)",
    ["method", "endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUEST_HEAD_TIMEOUTS = Counter(
    f"{PREFIX}_http_request_head_timeouts_total",
    "Connections closed with 408 for not sending a request's headers within REQUEST_HEAD_TIMEOUT_S",
)
EVENTS_PUBLISHED = Counter(
    f"{PREFIX}_live_events_published_total", "Events the hub of a worker published to its subscribers", ["event"]
)
SUBSCRIBERS_DROPPED = Counter(f"{PREFIX}_live_subscribers_dropped_total", "Subscribers dropped for being too slow")
SSE_CLIENTS = Gauge(f"{PREFIX}_sse_clients", "Connected Server-Sent Events clients", multiprocess_mode="livesum")
# Subscribers the hubs hold (one per SSE stream, one or two per worker for the Socket.IO relay): more
# than the clients would mean subscriptions left behind by clients that went away.
LIVE_SUBSCRIBERS = Gauge(
    f"{PREFIX}_live_subscribers",
    "Subscribers of the workers' hubs (sampled every JOB_STATS_INTERVAL_MS)",
    multiprocess_mode="livesum",
)
SOCKETIO_CLIENTS = Gauge(f"{PREFIX}_socketio_clients", "Connected Socket.IO clients", multiprocess_mode="livesum")
SOCKETIO_PENDING = Gauge(
    f"{PREFIX}_socketio_pending_sessions",
    "Engine.IO sessions waiting for their Socket.IO CONNECT with a valid token",
    multiprocess_mode="livesum",
)
SOCKETIO_HANDSHAKES_REFUSED = Counter(
    f"{PREFIX}_socketio_handshakes_refused_total",
    "Engine.IO handshakes refused: reason=rate (per client address) or capacity (too many pending)",
    ["reason"],
)
SOCKETIO_UNAUTHENTICATED_CLOSED = Counter(
    f"{PREFIX}_socketio_unauthenticated_closed_total",
    "Engine.IO sessions closed for not authenticating within SOCKETIO_CONNECT_TIMEOUT_S",
)
EVENTS_LOGGED = Counter(
    f"{PREFIX}_capture_events_logged_total", "Events (job updates and alerts) the capture leader appended to the log"
)
CAPTURE_LAG = Histogram(
    f"{PREFIX}_capture_lag_seconds",
    "Seconds between a job's updated_at and its event being logged (capture leader)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
CAPTURE_LEADER = Gauge(f"{PREFIX}_capture_leader", "1 in the process holding capture leadership", multiprocess_mode="livesum")
NOTIFY_DISPATCHER = Gauge(
    f"{PREFIX}_notify_dispatcher", "1 in the process dispatching alert notifications", multiprocess_mode="livesum"
)
NOTIFY_DELIVERED = Counter(f"{PREFIX}_notify_delivered_total", "Alert notifications a channel accepted", ["channel"])
NOTIFY_FAILURES = Counter(
    f"{PREFIX}_notify_failures_total",
    "Failed alert notification attempts (outcome: retry, or dead after NOTIFY_MAX_ATTEMPTS)",
    ["channel", "outcome"],
)
# Database time spent on job statistics by this process (summed over parallel connections):
# part=compute (the figures' queries), fetch (reading the published figures), reconcile (the
# capture leader's full count). Summed over a deployment: what stats cost it per interval.
STATS_QUERY_SECONDS = Counter(
    f"{PREFIX}_stats_query_seconds_total", "Seconds spent in job statistics queries by this process", ["part"]
)
STATS_COMPUTATIONS = Counter(
    f"{PREFIX}_stats_computations_total", "Computations of the job statistics by this process", ["basis"]
)
POOL_IN_USE = Gauge(f"{PREFIX}_db_pool_in_use", "Database connections checked out of the pool", multiprocess_mode="livesum")
POOL_SIZE = Gauge(f"{PREFIX}_db_pool_size", "Database pool size (DB_POOL_MAX per worker)", multiprocess_mode="livesum")


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


# --- hooks called from the live components -------------------------------------------------


def capture_logged(rows: list[dict[str, Any]], events: list[Any], inserted: int) -> None:
    """The capture leader committed `inserted` of `events`, made from these changed job rows.

    Lag is measured on the database's clock (clock_timestamp() of the read, just before the
    insert) against updated_at, so host clock skew does not enter; rows whose events were
    already logged (the overlap re-read) are not observed."""
    EVENTS_LOGGED.inc(inserted)
    if not rows or inserted != len(events):
        return  # some were duplicates: which ones is not known here, so no lag sample
    logged_at = rows[0]["db_now"]
    fresh = {e.job_row_id for e in events if e.event == "job-update"}
    for row in rows:
        if str(row["id"]) in fresh:
            CAPTURE_LAG.observe(max(0.0, (logged_at - row["updated_at"]).total_seconds()))


def watch_pool(engine: Engine) -> None:
    """Pool gauges of this process: its size, and connections checked out (counted by the pool's
    own checkout/checkin events; `checkin` fires before the pool counts the return)."""
    size = getattr(engine.pool, "size", None)
    if callable(size):
        POOL_SIZE.set(size())
    if not event.contains(engine, "checkout", _checked_out):  # once per engine, however many apps
        event.listen(engine, "checkout", _checked_out)
        event.listen(engine, "checkin", _checked_in)


def _checked_out(*_: Any) -> None:
    POOL_IN_USE.inc()


def _checked_in(*_: Any) -> None:
    POOL_IN_USE.dec()


# --- job counts, from the shared stats -------------------------------------------------------


class JobStatsCollector(Collector):
    """Job counts per status from the process's shared stats: no query of its own (a scrape at
    most triggers the shared computation once per JOB_STATS_INTERVAL_MS, like any caller)."""

    def __init__(self, stats: SharedStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            data, age_ms = self.stats.get()
        except Exception as exc:  # a scrape must answer while the database is down
            log.warning("metrics: job stats unavailable: %s", type(exc).__name__)
            up = GaugeMetricFamily(f"{PREFIX}_job_stats_up", "1 when the shared job statistics could be read")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily(f"{PREFIX}_job_stats_up", "1 when the shared job statistics could be read")
        up.add_metric([], 1)
        yield up
        overview = data["overview"]
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs per status (shared stats)", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], overview[status])
        yield jobs
        total = GaugeMetricFamily(f"{PREFIX}_jobs_total_count", "All jobs (shared stats)")
        total.add_metric([], overview["total"])
        yield total
        age = GaugeMetricFamily(f"{PREFIX}_job_stats_age_seconds", "Age of the shared job statistics")
        age.add_metric([], age_ms / 1000)
        yield age
        oldest = data.get("performance", {}).get("oldestQueuedJobAgeSeconds")
        if oldest is not None:
            queued = GaugeMetricFamily(f"{PREFIX}_oldest_queued_job_age_seconds", "Age of the oldest queued job")
            queued.add_metric([], oldest)
            yield queued


class CaptureModeCollector(Collector):
    """admin_service_capture_mode{mode}: 1 for the mode capture runs in, 0 for the others (an
    info-style state set); absent while the database cannot say."""

    def __init__(self, read_mode: Callable[[], str]) -> None:
        self.read_mode = read_mode

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            current = self.read_mode()
        except Exception as exc:
            log.warning("metrics: capture mode unavailable: %s", type(exc).__name__)
            return
        mode = GaugeMetricFamily(f"{PREFIX}_capture_mode", "1 for the capture mode in use", labels=["mode"])
        for name in CAPTURE_MODES:
            mode.add_metric([name], 1 if name == current else 0)
        yield mode


# --- the endpoint and the request hooks ------------------------------------------------------

# A request carrying any of these came through a proxy (with TRUST_PROXY, ProxyFix consumes
# X-Forwarded-For but a proxy may send only one of the others): not a direct loopback scrape.
FORWARDED = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Real-IP",
    "Via",
)


def _check_access(token: str | None) -> None:
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise unauthorized("A valid metrics token is required")
        return
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    forwarded = any(h in request.headers for h in FORWARDED)
    if not loopback or forwarded:
        raise ApiError(403, "Metrics are served to loopback only; set METRICS_TOKEN to scrape from elsewhere")


def exposition(shared: SharedStats, read_mode: Callable[[], str]) -> bytes:
    stats = CollectorRegistry(auto_describe=False)
    stats.register(JobStatsCollector(shared))
    stats.register(CaptureModeCollector(read_mode))
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(stats)


def install(app: Flask, engine: Engine, stats: SharedStats, settings: Settings, read_mode: Callable[[], str]) -> None:
    """Request metrics for every route, pool gauges, and GET /metrics when METRICS_ENABLED
    (`read_mode`: the capture mode, live/mode.py, which this module may not import)."""
    watch_pool(engine)

    def start() -> None:
        g.metrics_started = time.perf_counter()

    # First, so that requests answered by a later hook (preflight, rate limit, auth) are timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, start)

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            rule = request.url_rule
            labels = request_labels(request.method, rule.rule if rule is not None else None, response.status_code)
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - started)
        return response

    if not settings.metrics_enabled:
        return
    token = settings.metrics_token

    @app.get("/metrics")
    def metrics() -> Response:
        _check_access(token)
        response = Response(exposition(stats, read_mode), mimetype=None, content_type=CONTENT_TYPE_LATEST)
        response.headers["Cache-Control"] = "no-store"
        return response
