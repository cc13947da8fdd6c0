"""Dedicated (unpooled) psycopg2 connections for the long-lived live components."""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from sqlalchemy.engine import make_url

from admin_service.config import Settings
from admin_service.db.dbapi import Connection, Cursor
from admin_service.db.engine import TCP_USER_TIMEOUT_MS

psycopg2.extras.register_uuid()  # type: ignore[no-untyped-call]  # (the stubs leave it untyped)

log = logging.getLogger("admin_service.live")


def libpq_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect(settings: Settings, database_url: str, application_name: str) -> Connection:
    conn = psycopg2.connect(
        libpq_dsn(database_url),
        connect_timeout=settings.db_connect_timeout_s,
        application_name=application_name,
        options=f"-c statement_timeout={settings.db_statement_timeout_ms}",
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
    )
    conn.autocommit = True
    # psycopg2's connection fits the Protocol; its stubs spell cursor()'s arguments differently.
    return cast(Connection, conn)


@contextmanager
def transaction(cur: Cursor) -> Iterator[None]:
    """An explicit transaction on an autocommit connection (LISTEN needs autocommit between them)."""
    cur.execute("BEGIN")
    try:
        yield
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def wait_for_notify(conn: Connection, timeout: float, heard: set[str] | None = None) -> bool:
    """Block (cooperatively under gevent) until a NOTIFY arrives or timeout; True if any came.
    Their payloads are added to `heard` when given."""
    if not conn.notifies:
        readable, _, _ = select.select([conn], [], [], timeout)
        if readable:
            conn.poll()
    got = bool(conn.notifies)
    if heard is not None:
        heard.update(n.payload for n in conn.notifies)
    conn.notifies.clear()
    return got


def keep_connected(
    name: str,
    settings: Settings,
    database_url: str,
    stop: threading.Event,
    session: Callable[[Connection], None],
    retry_s: float,
) -> None:
    """Run `session` on a connection of its own until `stop`; after any failure (a database
    restart, a bug) close it, wait `retry_s` and start again: the capture and tail loops
    must outlive both for the life of the worker."""
    while not stop.is_set():
        conn: Connection | None = None
        try:
            conn = connect(settings, database_url, f"admin-service-{name}")
            session(conn)
        except psycopg2.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("%s: database error, retrying: %s", name, first_line)
        except Exception:
            log.exception("%s: unexpected error, retrying", name)
        finally:
            if conn is not None:
                conn.close()
        stop.wait(retry_s)
