"""Exact totals of filtered job lists, counted at most once per LIST_COUNT_INTERVAL_MS for the
whole deployment (every worker of every instance reads the same row), and the claim that lets
one of them recount a stale total while the others serve it (jobs/queries.py ListCounts).

Revision ID: 0006_list_counts
Revises: 0005_stats
"""

from alembic import context, op

revision = "0006_list_counts"
down_revision = "0005_stats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".list_counts (
            filter_key text PRIMARY KEY,      -- sha256 of the filter as given (and the time zone)
            total bigint,                     -- NULL until the first count completes
            counted_at timestamptz,           -- the count's snapshot (its statement's start)
            counting_since timestamptz        -- a worker's claim to recount; NULL when none
        )
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".list_counts')
