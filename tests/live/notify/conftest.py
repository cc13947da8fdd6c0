"""Notification tests in this process: the capture leader's alert pass and the dispatcher, each
on a connection of its own to the real database, sending to real receivers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from admin_service.config import Settings
from admin_service.db.dbapi import Connection
from admin_service.live.capture import Capturer
from admin_service.live.connection import connect
from admin_service.live.log import EventLog
from admin_service.live.notify.dispatcher import Dispatcher
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.settings import make_settings


class Leader:
    """What the capture leader and the dispatcher do, one step at a time, with `settings`."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        self.settings = settings
        self.conn: Connection = connect(settings, database_url, "test-leader")
        self.capturer = Capturer(settings, database_url, EventLog(settings.admin_schema))
        self.dispatcher = Dispatcher(settings, database_url)

    def evaluate(self) -> None:
        self.capturer.evaluate_alerts(self.conn)

    def dispatch(self) -> int:
        return self.dispatcher.dispatch_once(self.conn)

    def escalate(self) -> int:
        return self.dispatcher.escalate(self.conn)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def clean(engine: Engine, data: Data, settings: Settings) -> Data:
    reset_event_log(engine, settings)
    return data


@pytest.fixture
def leader(database_url: str, clean: Data) -> Iterator[Any]:
    made: list[Leader] = []

    def make(channels: str, **env: Any) -> Leader:
        settings = make_settings(database_url, env={"NOTIFY_CHANNELS": channels, "ALERT_QUEUE_MAX": "2", **env})
        made.append(Leader(database_url, settings))
        return made[-1]

    yield make
    for one in made:
        one.close()


def deliveries(engine: Engine, settings: Settings) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT id, delivery_id::text AS delivery_id, episode_id, channel, kind, status, attempts, last_error, "
                f'held_reason FROM "{settings.admin_schema}".alert_deliveries ORDER BY id'
            )
        )
        return [dict(r) for r in rows.mappings()]


def episodes(engine: Engine, settings: Settings) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(f'SELECT * FROM "{settings.admin_schema}".alert_episodes ORDER BY id'))
        return [dict(r) for r in rows.mappings()]


def overflow(data: Data, count: int = 3) -> list[dict[str, Any]]:
    """Enough queued jobs for queue_overflow (ALERT_QUEUE_MAX=2)."""
    return [data.job(status="queued") for _ in range(count)]


def drain(data: Data, jobs: list[dict[str, Any]]) -> None:
    """The queue back under its limit: the rule clears."""
    for job in jobs:
        data.execute("UPDATE archive.analysis_jobs SET status = 'completed', updated_at = now() WHERE id = :id", id=job["id"])
