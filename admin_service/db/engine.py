"""The SQLAlchemy engine: one pool per process, bounded, with a statement timeout."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from admin_service.config import Settings


def sqlalchemy_url(database_url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg2:// alike."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def make_engine(settings: Settings, database_url: str | None = None) -> Engine:
    url = database_url or settings.database_url
    if not url:
        raise RuntimeError("no database URL: start through `python -m admin_service serve` for the embedded default")
    return create_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_max,
        max_overflow=0,
        # A request waits at most this long for a connection before it is a 503.
        pool_timeout=5,
        # After a database restart the pool holds dead connections: test them on checkout.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            "application_name": "admin-service",
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            # Notice a vanished server within seconds instead of hanging on a dead socket.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )


def current_engine() -> Engine:
    """The engine of the running app (set up by create_app)."""
    from flask import current_app

    return current_app.extensions["admin_service.engine"]
