"""Test set-up: a real PostgreSQL (TEST_DATABASE_URL/DATABASE_URL, else an embedded one),
a fresh database per run, the app on it, a Redis, and a private PostgreSQL for the fault
tests. The helpers these build on are in tests/support/."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine

from admin_service import create_app
from admin_service.config import Settings
from admin_service.db.engine import make_engine, sqlalchemy_url
from admin_service.db.fixtures import create_fixture_tables
from admin_service.db.migrations import upgrade
from tests.support.factories import Data
from tests.support.postgres import PrivateServer, scratch_database
from tests.support.redis_server import RedisServer, answers
from tests.support.service import free_port
from tests.support.settings import make_settings
from tests.support.tokens import bearer, token_for

# --- the database and the app on it ----------------------------------------------------------


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: the configured one, or a private embedded one."""
    configured = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        yield sqlalchemy_url(configured)
        return
    from admin_service.db.embedded import start_embedded

    # Not under pytest's basetemp: that is 0700 and reused across runs; pgserver runs as
    # another OS user and needs a private, traversable folder of its own.
    folder = Path(tempfile.mkdtemp(prefix="admin-service-test-pg-"))
    server, url = start_embedded(folder / "data")
    yield url
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """This run's database, with the archive tables' fixture."""
    with scratch_database(server_url, f"admin_service_test_{os.getpid()}") as url:
        engine = create_engine(url)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    upgrade(engine, settings)
    yield engine
    engine.dispose()


@pytest.fixture
def app(settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    return create_app(settings, engine)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def data(engine: Engine) -> Data:
    """Empty archive tables and a builder for rows; each test states its own data."""
    builder = Data(engine)
    builder.clear()
    return builder


@pytest.fixture
def admin(data: Data) -> dict[str, Any]:
    return data.user(user_type="admin", email=f"admin-{uuid.uuid4().hex[:6]}@example.com")


@pytest.fixture
def auth(admin: dict[str, Any]) -> dict[str, str]:
    """Authorization header of a valid admin token."""
    return bearer(token_for(admin))


# --- a private PostgreSQL, which a test may stop and start -----------------------------------


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    """A private server with the archive tables' fixture, for one test module."""
    # mkdtemp, not tmp_path_factory: concurrent pytest runs can be handed the same basetemp.
    folder = Path(tempfile.mkdtemp(prefix="admin-service-outage-"))
    server = None
    try:
        server = PrivateServer(folder / "data")
        engine = create_engine(server.url)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        engine.dispose()
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_engine(private_server: PrivateServer) -> Iterator[Engine]:
    """An engine on the private server, its own schema migrated."""
    settings = make_settings(private_server.url)
    engine = make_engine(settings)
    upgrade(engine, settings)
    yield engine
    engine.dispose()


# --- Redis, for the shared rate limits -------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A RabbitMQ: TEST_AMQP_URL, the machine's at 127.0.0.1:5672, or a private node started here."""
    from tests.support import rabbitmq

    url = os.environ.get("TEST_AMQP_URL") or rabbitmq.SHARED_URL
    if rabbitmq.answers(url):
        yield url
        return
    try:
        node = rabbitmq.RabbitNode(rabbitmq.node_port(), Path(tempfile.mkdtemp(prefix="admin-service-test-rabbitmq-")))
        node.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield node.url
    node.stop()
    shutil.rmtree(node.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """TEST_REDIS_URL when it answers, else a private redis-server on a free port for this run
    (so the tests need no Redis installed as a service)."""
    configured = os.environ.get("TEST_REDIS_URL")
    if configured and answers(configured):
        yield configured
        return
    server = RedisServer(free_port())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_keys(redis_client: redis.Redis) -> Iterator[list[str]]:
    """Ids whose rate-limit keys a test leaves in Redis: deleted afterwards, nothing else is
    (TEST_REDIS_URL may be a Redis other things use)."""
    ids: list[str] = []
    yield ids
    for user_id in ids:
        for key in redis_client.scan_iter(match=f"*{user_id}*"):
            redis_client.delete(key)


# --- no skip counted as a pass ---------------------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test proved nothing: the run fails (make test installs what the tests need)."""
    if _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_line(f"{len(_skipped)} skipped test(s) fail the run: a skip is not a pass", red=True)
