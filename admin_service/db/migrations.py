"""The service's own schema (ADMIN_SCHEMA, `admin` by default): the only one it writes."""

from __future__ import annotations

from sqlalchemy import Engine

from admin_service.config import Settings


def upgrade(engine: Engine, settings: Settings) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.admin_schema}"')
