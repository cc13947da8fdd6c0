"""One running service (one worker, the Socket.IO settings) for a Socket.IO test module, started
on an empty event log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.service import RunningService, run_service
from tests.support.socketio import ENV


@pytest.fixture(scope="module")
def service(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    with run_service(database_url, tmp_path_factory.mktemp("socketio"), workers=1, env=ENV) as running:
        yield running
