"""`db install-indexes`: the opt-in indexes it prints and builds, and what they serve. Here the
users' trigram indexes: the user_email / user_username filters keep their answers and, where the
server offers pg_trgm, are served by an index instead of reading every user."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, select, text

from admin_service.db.archive_options import trigram_available
from admin_service.db.tables import users
from admin_service.jobs.queries import partial_match
from tests.support.factories import Data
from tests.support.live import cli


def _plan(engine: Engine, stmt: Any) -> str:
    with engine.connect() as conn:
        # A handful of users: without this the planner reads the table whatever indexes exist.
        conn.execute(text("SET enable_seqscan = off"))
        compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))


def test_user_filters_find_the_same_jobs_and_use_the_trigram_indexes(
    database_url: str, engine: Engine, client: FlaskClient, data: Data, auth: dict[str, str]
) -> None:
    alice = data.user(email="Alice.Smith@example.com", username="alice_smith")
    bob = data.user(email="bob@example.org", username="bobby")
    alices = {data.job(user=alice)["id"] for _ in range(3)}
    data.job(user=bob)

    def listed(**params: str) -> set[str]:
        body = client.get("/admin/jobs", query_string={"limit": 100, **params}, headers=auth).get_json()
        return {job["id"] for job in body["data"]["jobs"]}

    before = (listed(user_email="SMITH@"), listed(user_username="ice_sm"))
    installed = cli(database_url, "db", "install-indexes")
    try:
        if trigram_available(engine):
            assert "CREATE EXTENSION IF NOT EXISTS pg_trgm;" in installed.stdout
            for name in ("admin_idx_users_email_trgm", "admin_idx_users_username_trgm"):
                assert f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON auth.users" in installed.stdout
            plan = _plan(engine, select(users.c.id).where(partial_match(users.c.email, "smith@")))
            assert "admin_idx_users_email_trgm" in plan, plan
            plan = _plan(engine, select(users.c.id).where(partial_match(users.c.username, "ice_sm")))
            assert "admin_idx_users_username_trgm" in plan, plan
        else:
            assert "pg_trgm is not available on this server" in installed.stdout
        after = (listed(user_email="SMITH@"), listed(user_username="ice_sm"))
        assert before == after == (alices, alices)
        # Wildcards in the term still match themselves, index or not.
        assert listed(user_username="e_s") == alices and listed(user_username="e%s") == set()
    finally:
        dropped = cli(database_url, "db", "install-indexes", "--drop")
    assert "DROP INDEX CONCURRENTLY IF EXISTS auth.admin_idx_users_email_trgm;" in dropped.stdout
