"""The service's own schema (ADMIN_SCHEMA, `admin` by default), migrated with Alembic.

It is the only schema the service writes. Safe to run from several processes at once:
an advisory lock serialises them.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from admin_service.config import Settings

SCRIPTS = Path(__file__).parent / "alembic"
# Arbitrary but fixed: the lock every migrating process takes.
MIGRATION_LOCK = 0x41444D01


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["schema"] = settings.admin_schema
    return config


def upgrade(engine: Engine, settings: Settings, revision: str = "head") -> None:
    config = alembic_config(settings)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.admin_schema}"')
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
