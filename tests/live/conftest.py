"""The live tests' fixtures: clean event-log tables, and one shared running service (ENV settings)
for the tests that need no instance of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.live import ENV, drop_trigger
from tests.support.service import RunningService, run_service


@pytest.fixture
def live(engine: Engine, data: Data, settings: Settings) -> Iterator[Data]:
    """Empty archive and event-log tables, and no notify trigger before and after."""
    reset_event_log(engine, settings)
    drop_trigger(engine, settings)
    yield data
    drop_trigger(engine, settings)


class SharedService:
    """One running service for the tests that need no settings of their own, started on
    first use and stopped for the tests that run their own instances (which need to be
    the only candidates for capture leadership)."""

    def __init__(self, database_url: str, directory: Path) -> None:
        self.database_url = database_url
        self.directory = directory
        self._stack: ExitStack | None = None
        self._running: RunningService | None = None

    def get(self) -> RunningService:
        if self._running is None:
            self._stack = ExitStack()
            self._running = self._stack.enter_context(run_service(self.database_url, self.directory, env=ENV))
        return self._running

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._running = None


@pytest.fixture(scope="module")
def shared(database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedService]:
    holder = SharedService(database_url, tmp_path_factory.mktemp("live"))
    yield holder
    holder.stop()


@pytest.fixture
def service(shared: SharedService, live: Data) -> RunningService:
    """The shared service (ENV settings), on clean tables."""
    return shared.get()


@pytest.fixture
def alone(shared: SharedService, live: Data) -> Data:
    """Clean tables and no other instance on the database: the test runs its own."""
    shared.stop()
    return live
