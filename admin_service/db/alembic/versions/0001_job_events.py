"""The job event log, capture progress and alert episodes.

Revision ID: 0001
Revises:
"""

from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".job_events (
            id bigserial PRIMARY KEY,
            event varchar(20) NOT NULL,          -- job-update | job-alert
            kind varchar(40) NOT NULL,           -- created/updated/completed/failed/cancelled, or the alert type
            job_row_id uuid,
            status varchar(50),
            payload jsonb NOT NULL,              -- exactly what subscribers receive
            dedupe_key text NOT NULL UNIQUE,     -- the same change captured twice is one event
            occurred_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX job_events_job_idx ON "{s}".job_events (job_row_id, id);
        CREATE INDEX job_events_occurred_idx ON "{s}".job_events (occurred_at);
        CREATE INDEX job_events_alert_idx ON "{s}".job_events (id) WHERE event = 'job-alert';

        CREATE TABLE "{s}".capture_state (
            id smallint PRIMARY KEY CHECK (id = 1),
            watermark timestamptz NOT NULL,      -- newest updated_at captured
            pruned_through bigint NOT NULL DEFAULT 0,  -- events with id <= this were pruned
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE "{s}".alert_state (
            rule varchar(50) PRIMARY KEY,
            active boolean NOT NULL,
            since timestamptz NOT NULL DEFAULT now(),
            data jsonb
        );
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".alert_state, "{s}".capture_state, "{s}".job_events')
