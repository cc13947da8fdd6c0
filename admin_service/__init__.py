"""admin-service: watch the assessment platform's analysis jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Nothing heavy at import time: gunicorn's master imports admin_service.lifecycle (and so this
# package) before the workers fork and gevent patches them; Flask, SQLAlchemy and the app load
# in the workers, with create_app.
if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine

    from admin_service.config import Settings


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """The WSGI app. Settings come from the environment unless given (tests give them)."""
    from functools import partial

    from flask import Flask
    from flask_cors import CORS
    from werkzeug.middleware.proxy_fix import ProxyFix

    from admin_service import dashboard, docs, health, metrics, web
    from admin_service.actions.routes import blp as actions_blp
    from admin_service.api import API_CONFIG, Api
    from admin_service.auth import Authenticator
    from admin_service.config import load_settings
    from admin_service.db.engine import make_engine
    from admin_service.errors import register_error_handlers
    from admin_service.jobs.export_routes import blp as export_blp
    from admin_service.jobs.routes import blp as jobs_blp
    from admin_service.jobs.stats import SharedStats
    from admin_service.live.alert_routes import blp as alerts_blp
    from admin_service.live.alert_routes import system_blp as system_alerts_blp
    from admin_service.live.mode import read_capture_mode
    from admin_service.live.routes import blp as events_blp
    from admin_service.live.runtime import LiveRuntime
    from admin_service.live.sse import blp as live_blp
    from admin_service.ratelimit import FailedAuthGuard, limit_admin_routes, limit_exports, make_limiter
    from admin_service.services import Services, install_services
    from admin_service.session import blp as session_blp
    from admin_service.triage.routes import blp as triage_blp
    from admin_service.users.routes import blp as users_blp

    settings = settings or load_settings()
    web.configure_logging(settings.log_level)
    app = Flask(__name__)
    app.json = web.IsoJSONProvider(app)
    app.config.update(API_CONFIG)
    app.config.update(SETTINGS=settings, DEBUG=settings.debug, MAX_CONTENT_LENGTH=64 * 1024)
    if settings.trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]

    # Its own pool reads in autocommit mode; an engine handed in (tests) is used as it is.
    engine = engine or make_engine(settings, autocommit=True)
    stats = SharedStats(engine, settings)

    CORS(
        app,
        resources={r"/admin/*": {"origins": list(settings.allowed_origins)}},
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID", "Idempotency-Key"],
        expose_headers=["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"],
        methods=["GET", "HEAD", "OPTIONS", "POST"],
        max_age=600,
    )
    web.install(app, settings)
    metrics.install(app, engine, stats, settings, partial(read_capture_mode, engine, settings.admin_schema))
    # After web.install: its preflight answer must run before the limiter's check.
    limiter = make_limiter(app, settings, engine)
    # Failed token checks count in the rate-limit store.
    authenticator = Authenticator(settings, engine, guard=FailedAuthGuard(limiter, settings))
    limit_admin_routes(
        limiter,
        settings,
        live_blp,
        alerts_blp,
        system_alerts_blp,
        events_blp,
        jobs_blp,
        users_blp,
        triage_blp,
        session_blp,
        actions_blp,
    )
    limit_exports(limiter, settings, export_blp)

    api = Api(app)
    # Routing does not depend on this order (werkzeug ranks the static /stream and /alerts above
    # /<job_ref>); the OpenAPI document lists the paths in it (openapi/openapi.json is checked).
    api.register_blueprint(live_blp)
    api.register_blueprint(alerts_blp)
    api.register_blueprint(system_alerts_blp)
    api.register_blueprint(events_blp)
    api.register_blueprint(jobs_blp)
    api.register_blueprint(export_blp)
    api.register_blueprint(users_blp)
    api.register_blueprint(triage_blp)
    api.register_blueprint(session_blp)
    api.register_blueprint(actions_blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(docs.blp)
    app.register_blueprint(dashboard.blp)
    install_services(
        app,
        Services(
            settings=settings,
            engine=engine,
            authenticator=authenticator,
            stats=stats,
            runtime=LiveRuntime(settings, engine, stats, authenticator),
            limiter=limiter,
            api=api,
        ),
    )
    register_error_handlers(app)
    return app
