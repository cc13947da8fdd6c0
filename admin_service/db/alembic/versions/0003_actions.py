"""Job actions: the audit log of what operators asked for, one outbox item per job, the
Idempotency-Key answers and the key that signs dry-run confirmation tokens.

An action and its items are written in the request's own transaction; the dispatcher
(admin_service/actions/dispatcher.py) sends the items afterwards, so nothing is sent before
the action commits. This service never writes the archive tables: an item is handed to the
platform (a command on its broker or a call to its API), and its outcome read back by capture.

Revision ID: 0003_actions
Revises: 0003 (0003_rate_limits)
"""

from alembic import context, op

revision = "0003_actions"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".actions (
            id uuid PRIMARY KEY,
            kind varchar(20) NOT NULL,                       -- retry
            state varchar(20) NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
            requested_by uuid NOT NULL,                      -- auth.users.id of the operator
            requested_by_email varchar(255),
            role varchar(20) NOT NULL,                       -- their user_type when they asked
            reason text NOT NULL CHECK (length(btrim(reason)) > 0),
            filter jsonb,                                    -- the filter as given; NULL for one job by id
            job_ids uuid[] NOT NULL,                         -- the snapshot of the jobs it covers
            total integer NOT NULL,
            transport varchar(10) NOT NULL,                  -- amqp | http | demo
            confirmation_nonce uuid UNIQUE,                  -- a dry-run token confirms one action only
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            cancelled_by uuid,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX actions_created_idx ON "{s}".actions (created_at DESC, id DESC);
        CREATE INDEX actions_open_idx ON "{s}".actions (created_at) WHERE state IN ('pending', 'running');

        CREATE TABLE "{s}".action_items (
            id uuid PRIMARY KEY,                             -- the command's idempotency key
            action_id uuid NOT NULL REFERENCES "{s}".actions (id) ON DELETE CASCADE,
            position integer NOT NULL,                       -- the order in the snapshot
            job_row_id uuid NOT NULL,
            job_id varchar(255) NOT NULL,
            state varchar(20) NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sent', 'picked_up', 'failed', 'skipped')),
            reason text,                                     -- why skipped or failed
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            attempted_at timestamptz,                        -- the newest send began (before its confirm)
            sent_at timestamptz,
            picked_up_at timestamptz,
            picked_up_status varchar(50),                    -- the status capture saw the job leave failed for
            overdue_at timestamptz,                          -- reported as not picked up in time
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (action_id, position)
        );
        CREATE INDEX action_items_due_idx ON "{s}".action_items (next_attempt_at, action_id, position) WHERE state = 'pending';
        CREATE INDEX action_items_waiting_idx ON "{s}".action_items (job_row_id)
            WHERE state IN ('pending', 'sent') AND attempted_at IS NOT NULL;
        CREATE INDEX action_items_job_idx ON "{s}".action_items (job_row_id, action_id);
        CREATE INDEX action_items_unconfirmed_idx ON "{s}".action_items (sent_at) WHERE state = 'sent' AND overdue_at IS NULL;

        CREATE TABLE "{s}".idempotency_keys (
            user_id uuid NOT NULL,
            key varchar(200) NOT NULL,
            route varchar(200) NOT NULL,
            request_hash char(64) NOT NULL,                  -- the same key with another request is refused
            status integer NOT NULL,
            response jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX idempotency_keys_created_idx ON "{s}".idempotency_keys (created_at);

        CREATE TABLE "{s}".action_secret (
            id smallint PRIMARY KEY CHECK (id = 1),
            secret text NOT NULL                             -- HMAC key of dry-run tokens, shared by every instance
        );
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".action_secret, "{s}".idempotency_keys, "{s}".action_items, "{s}".actions')
