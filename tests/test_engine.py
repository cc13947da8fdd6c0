"""The service's pool runs in autocommit mode (one round trip per statement), where SET LOCAL and
SET TRANSACTION have no effect at all: the statements that need a transaction (the percentiles'
work_mem, failure triage's snapshot) get one from db/engine.py `transaction`, and the connection
goes back to the pool in autocommit mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine

from admin_service.db.engine import make_engine, transaction
from admin_service.jobs.stats import SORT_WORK_MEM, in_parallel
from tests.support.settings import make_settings


@pytest.fixture
def service_pool(database_url: str) -> Iterator[Engine]:
    """The pool as the service makes it, with one connection (so that it is the same one each time)."""
    engine = make_engine(make_settings(database_url, env={"DB_POOL_MAX": "1"}), autocommit=True)
    yield engine
    engine.dispose()


def work_mem_after_set_local(conn: Connection) -> str:
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_WORK_MEM}'")
    return str(conn.exec_driver_sql("SHOW work_mem").scalar())


def test_set_local_needs_the_transaction_it_is_given(service_pool: Engine) -> None:
    with service_pool.connect() as conn:
        assert work_mem_after_set_local(conn) == "4MB"  # each statement alone: the setting is gone at once
    with transaction(service_pool, "REPEATABLE READ") as conn:
        assert work_mem_after_set_local(conn) == SORT_WORK_MEM
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
    with service_pool.connect() as conn:  # the same connection, back in autocommit mode
        assert work_mem_after_set_local(conn) == "4MB"
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"


def test_the_stats_parts_run_in_transactions(service_pool: Engine) -> None:
    """So that the percentiles sort in memory under the service's own pool too."""
    assert in_parallel(service_pool, work_mem_after_set_local) == [SORT_WORK_MEM]
