"""Test set-up: a real PostgreSQL (TEST_DATABASE_URL/DATABASE_URL, else an embedded one),
a fresh database per run, the app on it, and helpers to run the service under gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from admin_service import create_app
from admin_service.auth import sign_token
from admin_service.config import Settings, load_settings
from admin_service.db.engine import make_engine, sqlalchemy_url
from admin_service.db.fixtures import create_fixture_tables
from admin_service.db.migrations import upgrade
from tests.factories import Data

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-for-admin-service-0123456789"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: the configured one, or a private embedded one."""
    configured = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        yield sqlalchemy_url(configured)
        return
    import shutil
    import tempfile

    from admin_service.db.embedded import start_embedded

    # Not under pytest's basetemp: that is 0700 and reused across runs; pgserver runs as
    # another OS user and needs a private, traversable folder of its own.
    folder = Path(tempfile.mkdtemp(prefix="admin-service-test-pg-"))
    server, url = start_embedded(folder / "data")
    yield url
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """A database of its own on the server, dropped afterwards (the machine's server is shared)."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """This run's database, with the archive tables' fixture."""
    with scratch_database(server_url, f"admin_service_test_{os.getpid()}") as url:
        engine = create_engine(url)
        with engine.begin() as conn:
            create_fixture_tables(conn)
        engine.dispose()
        yield url


@contextmanager
def table_locked(engine: Engine, table: str) -> Iterator[None]:
    """Hold `table` in ACCESS EXCLUSIVE mode for the block: every read of it waits (a long
    migration, a stuck writer), and the lock goes with the block."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield


def make_settings(database_url: str, **overrides: Any) -> Settings:
    # Generous limits: the suites send many requests and bad tokens from one address; the
    # tests of the limits set their own.
    env = {
        "JWT_SECRET": TEST_SECRET,
        "RATE_LIMIT": "100000 per minute",
        "AUTH_FAILURE_LIMIT": "100000 per minute",
        "LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in overrides.pop("env", {}).items()})
    return load_settings(env, database_url=database_url, **overrides)


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


def token_for(user: dict[str, Any], settings_: Settings | None = None, **kwargs: Any) -> str:
    settings_ = settings_ or load_settings({"JWT_SECRET": TEST_SECRET})
    return sign_token(settings_, user["id"], **kwargs)


@pytest.fixture
def auth(admin: dict[str, Any]) -> dict[str, str]:
    """Authorization header of a valid admin token."""
    return {"Authorization": f"Bearer {token_for(admin)}"}


# --- the service under gunicorn -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningService:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (gunicorn serving TLS itself)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextmanager
def run_service(
    database_url: str,
    tmp_path: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[RunningService]:
    """The service as production runs it: gunicorn, gevent workers, a real port; with `tls`
    (certificate, key) gunicorn serves HTTPS itself."""
    port = free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        "RATE_LIMIT": "100000 per minute",
        "AUTH_FAILURE_LIMIT": "100000 per minute",
        "GRACEFUL_TIMEOUT": "3",
        **({"GUNICORN_CMD_ARGS": f"--certfile {tls[0]} --keyfile {tls[1]}"} if tls else {}),
        **(env or {}),
    }
    log_path = tmp_path / f"service-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = RunningService(process, port, log_path)
    if tls:
        service.url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{service.log()}")
            try:
                if requests.get(f"{service.url}/health", timeout=1, verify=str(tls[0]) if tls else True).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{service.log()}")
            time.sleep(0.1)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
