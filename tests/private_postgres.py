"""A PostgreSQL of a test module's own, which the test may stop and start again.

pgserver's embedded server in a temporary folder: faults are injected here, never on the
machine's shared server (TEST_DATABASE_URL), which other runs use at the same time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from admin_service.db.engine import make_engine
from admin_service.db.fixtures import create_fixture_tables
from admin_service.db.migrations import upgrade
from tests.conftest import make_settings


class PrivateServer:
    """pgserver's PostgreSQL in a temporary folder, with stop and start (pgserver has only start)."""

    def __init__(self, data_dir: Path) -> None:
        from admin_service.db.embedded import start_embedded

        self.handle, self.url = start_embedded(data_dir)
        self.socket_dir = self.handle.get_postmaster_info().socket_dir

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl

        # As root, pgserver runs PostgreSQL as the OS user `pgserver`; pg_ctl must too.
        pg_ctl(args, pgdata=self.handle.pgdata, user=self.handle.system_user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def start(self) -> None:
        # The same options pgserver starts it with: Unix socket only, in the same folder.
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.handle.log), "start"])

    def running(self) -> bool:
        from pgserver._commands import pg_ctl

        try:
            pg_ctl(["status"], pgdata=self.handle.pgdata, user=self.handle.system_user, timeout=30)
        except Exception:
            return False
        return True

    def close(self) -> None:
        # pgserver's own cleanup only knows the first postmaster's pid: stop a restarted one here.
        if self.running():
            self.stop()
        self.handle.cleanup()


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
