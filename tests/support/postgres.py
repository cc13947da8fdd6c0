"""PostgreSQL for the tests: scratch databases on the shared server, tables held locked, and
a server of a test module's own, which the test may stop and start again.

The private server is pgserver's embedded one in a temporary folder: faults are injected
there, never on the machine's shared server (TEST_DATABASE_URL), which other runs use at the
same time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url


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


@contextmanager
def table_locked(engine: Engine, table: str) -> Iterator[None]:
    """Hold `table` in ACCESS EXCLUSIVE mode for the block: every read of it waits (a long
    migration, a stuck writer), and the lock goes with the block."""
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield


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

    def processes(self) -> list[int]:
        """The postmaster (from postmaster.pid) and its children, the backends among them."""
        postmaster = int(Path(self.handle.pgdata, "postmaster.pid").read_text().split()[0])
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry))
        return [postmaster, *children]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the server stopped (SIGSTOP) for the block: it accepts and buffers
        what clients send (the kernel does) but answers nothing, as a hung host or storage does."""
        pids = self.processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        # pgserver's own cleanup only knows the first postmaster's pid: stop a restarted one here.
        if self.running():
            self.stop()
        self.handle.cleanup()
