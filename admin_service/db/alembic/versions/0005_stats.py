"""Stats once per deployment: the capture leader's maintained counts per status and the
figures it publishes (admin_service/jobs/stats.py).

`job_status_counts` holds one row per shown status ('' for a NULL or unknown one: counted in
the total only), changed by the capture leader in the transaction that logs each change and
replaced by a full count at each reconciliation (and whenever capture's mode changes);
`job_counts_state` says when that was, in which mode, and how many changes were applied since. `stats_snapshot` holds the newest published figures and the
demand: workers push `wanted_until` forward (at most once per interval each) while someone in
the deployment wants figures; the leader computes only until then.

Revision ID: 0005_stats
Revises: 0004_alert_episodes
"""

from alembic import context, op

revision = "0005_stats"
down_revision = "0004_alert_episodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".job_status_counts (
            status varchar(50) PRIMARY KEY,
            n bigint NOT NULL
        );
        CREATE TABLE "{s}".job_counts_state (
            id integer PRIMARY KEY CHECK (id = 1),
            reconciled_at timestamptz,                -- NULL: never counted, not usable
            changes_since bigint NOT NULL DEFAULT 0,  -- status changes applied since then
            drift jsonb,                              -- what the last reconciliation corrected
            mode varchar(10)                          -- capture's mode since then: exact | poll
        );
        INSERT INTO "{s}".job_counts_state (id) VALUES (1);
        CREATE TABLE "{s}".stats_snapshot (
            id integer PRIMARY KEY CHECK (id = 1),
            wanted_until timestamptz,
            figures json,                             -- json, not jsonb: keeps the keys in the order clients see
            computed_at timestamptz,
            computed_by text
        );
        INSERT INTO "{s}".stats_snapshot (id) VALUES (1);
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".stats_snapshot, "{s}".job_counts_state, "{s}".job_status_counts')
