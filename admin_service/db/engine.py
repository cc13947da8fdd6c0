"""The SQLAlchemy engine: one pool per process, bounded, with a statement timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from admin_service.config import Settings

# libpq's tcp_user_timeout (TCP connections only; a Unix socket has no such state).
TCP_USER_TIMEOUT_MS = 10_000


def sqlalchemy_url(database_url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg2:// alike."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def make_engine(settings: Settings, database_url: str | None = None, *, autocommit: bool = False) -> Engine:
    """The pool. `autocommit=True` is the service's own (it only reads): each statement stands
    alone, exactly as it would inside a READ COMMITTED transaction, but psycopg2 sends no
    BEGIN before it and no ROLLBACK when the connection goes back to the pool, two round
    trips fewer per request. Commands that write (migrations, seeding, DDL) keep transactions."""
    url = database_url or settings.database_url
    if not url:
        raise RuntimeError("no database URL: start through `python -m admin_service serve` for the embedded default")
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_max,
        max_overflow=0,
        # A request waits at most this long for a connection before it is a 503.
        pool_timeout=5,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT" if autocommit else None,
        # A failed statement's exception (and so its logged traceback) must not carry the values
        # it was sent: they are client input, tokens' subjects, ...
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            "application_name": "admin-service",
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            # Notice a vanished server within seconds instead of hanging on a dead socket.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            # Sent data unacknowledged this long (a peer gone without a reset) fails the
            # connection. A stopped server whose kernel still acknowledges is db/green.py's part.
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        },
    )
    ping_idle_connections(engine)
    return engine


@contextmanager
def transaction(engine: Engine, isolation_level: str = "READ COMMITTED") -> Iterator[Connection]:
    """A connection inside a transaction of its own, also from the service's autocommit pool:
    for the few statements that need one (a snapshot shared by several statements, or SET
    LOCAL settings such as work_mem, which outside a transaction block have no effect at all).
    The connection goes back to the pool in the pool's own mode."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level=isolation_level)
        with conn.begin():
            yield conn


# A connection idle longer than this is tested before use (see ping_idle_connections).
PING_AFTER_IDLE_S = 2.0


def ping_idle_connections(engine: Engine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Test a pooled connection on checkout only when it sat idle for a while.

    pool_pre_ping tests every checkout: one extra round trip per request, a quarter of a
    details request's time. A connection in steady use is known alive; one that sat idle may
    have been cut (database restart, idle timeouts, failover). A connection that dies in use
    fails that statement (a 503) and SQLAlchemy then invalidates the whole pool, so the next
    requests start on fresh connections either way.
    """

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["last_used"] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get("last_used")
        if last_used is None or time.monotonic() - last_used < idle_s:
            return  # just connected, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc

    event.listen(engine, "checkin", on_checkin)
    event.listen(engine, "checkout", on_checkout)
