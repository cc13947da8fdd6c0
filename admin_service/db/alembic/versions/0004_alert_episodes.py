"""Alert episodes (the lifecycle: active, acknowledged, resolved) and the notification outbox.

`alert_episodes` gets one row per raised alert, in the capture leader's transaction that logs
the alert; `alert_deliveries` one row per message per channel, written in the same transaction
as the state change it announces, and worked off by the one dispatcher
(admin_service/live/notify/dispatcher.py).

Revision ID: 0004_alert_episodes
Revises: 0003_actions
"""

from alembic import context, op

revision = "0004_alert_episodes"
down_revision = "0003_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".alert_episodes (
            id bigserial PRIMARY KEY,
            type varchar(50) NOT NULL,
            severity varchar(20) NOT NULL,
            message text NOT NULL,
            data jsonb NOT NULL,                      -- the figures when raised
            status varchar(20) NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'acknowledged', 'resolved')),
            raise_key text NOT NULL UNIQUE,           -- the job-alert event's dedupe key: one episode per raise
            job_row_id uuid,                          -- per-job alerts (retries_exhausted)
            raised_at timestamptz NOT NULL DEFAULT now(),
            acknowledged_at timestamptz,
            acknowledged_by varchar(255),             -- the operator (email, else username, else user id)
            acknowledged_by_id varchar(255),
            acknowledge_note text,
            resolved_at timestamptz,
            resolved_by varchar(255),                 -- NULL: the rule cleared
            resolved_by_id varchar(255),
            resolve_note text,
            resolution jsonb,                         -- the figures when the rule cleared
            escalations integer NOT NULL DEFAULT 0,   -- escalation messages sent so far
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX alert_episodes_status_idx ON "{s}".alert_episodes (status, id);
        CREATE INDEX alert_episodes_type_idx ON "{s}".alert_episodes (type, id);

        CREATE TABLE "{s}".alert_deliveries (
            id bigserial PRIMARY KEY,
            delivery_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),  -- receivers de-duplicate by it
            episode_id bigint REFERENCES "{s}".alert_episodes (id) ON DELETE CASCADE,  -- NULL: a test or digest
            channel varchar(100) NOT NULL,
            kind varchar(20) NOT NULL CHECK (kind IN ('raised', 'resolved', 'escalation', 'digest', 'test')),
            alert_type varchar(50),
            message jsonb NOT NULL,                   -- what to say, fixed when the state changed
            status varchar(20) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead', 'held')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error text,
            held_reason text,                         -- why a held message was not sent (storm control)
            digest_id bigint,                         -- held by the window: the digest delivery that tells it
            created_at timestamptz NOT NULL DEFAULT now(),
            delivered_at timestamptz
        );
        CREATE INDEX alert_deliveries_due_idx ON "{s}".alert_deliveries (next_attempt_at) WHERE status = 'pending';
        CREATE INDEX alert_deliveries_episode_idx ON "{s}".alert_deliveries (episode_id, id);
        CREATE INDEX alert_deliveries_channel_idx ON "{s}".alert_deliveries (channel, alert_type, created_at);
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".alert_deliveries, "{s}".alert_episodes')
