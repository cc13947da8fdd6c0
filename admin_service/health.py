"""Liveness and readiness probes (no auth, not rate limited)."""

from __future__ import annotations

from flask import Blueprint, Response

from admin_service.db.green import statement_deadline
from admin_service.errors import envelope, unavailable
from admin_service.live.mode import capture_mode
from admin_service.services import services

blp = Blueprint("health", __name__)

# The readiness probe's own deadline for the database's answer (connecting included): an
# orchestrator probing every few seconds must hear "not ready" before it asks again, whatever
# the statement timeout.
READY_DEADLINE_S = 2.0


@blp.get("/health")
def health() -> Response:
    return envelope({"status": "ok"}, "Service is alive")


@blp.get("/health/ready")
def ready() -> Response:
    try:
        with statement_deadline(READY_DEADLINE_S), services().engine.connect() as conn:
            mode = capture_mode(conn, services().settings.admin_schema)
    except Exception:
        raise unavailable("Database unreachable") from None
    return envelope({"status": "ready", "database": "ok", "capture": {"mode": mode}}, "Service is ready")
