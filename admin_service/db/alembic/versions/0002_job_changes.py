"""The change table of exact capture, and which change each logged event came from.

`job_changes` is filled by the opt-in row trigger on archive.analysis_jobs
(`python -m admin_service db install-change-capture`), in the writer's own transaction, and
emptied by the capture leader as it logs the events (see admin_service/live/changes.py).

Revision ID: 0002
Revises: 0001
"""

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE TABLE "{s}".job_changes (
            -- CACHE 1 (the default): ids are handed out in the order the writers' triggers run,
            -- which per job is the order of its transactions (the consumer's proof relies on it).
            id bigserial PRIMARY KEY,
            xid xid8 NOT NULL DEFAULT pg_current_xact_id(),  -- the writer's (top-level) transaction
            op char(1) NOT NULL CHECK (op IN ('I', 'U', 'D')),
            job_row_id uuid NOT NULL,
            old_status varchar(50),                          -- NULL for an insert
            new_status varchar(50),                          -- NULL for a delete
            job jsonb NOT NULL,                              -- the row's shown columns (after; before for a delete)
            updated_at timestamptz,                          -- the writer's updated_at
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        ALTER TABLE "{s}".job_events ADD COLUMN change_id bigint;  -- NULL: sampled by polling, or an alert
        ALTER TABLE "{s}".capture_state ADD COLUMN mode varchar(10);  -- exact | poll: the last leader's
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    # The change-capture trigger, if installed, writes into the table: it goes first (with
    # CASCADE, the triggers on archive.analysis_jobs that call it), or every writer would fail.
    op.execute(
        f'DROP FUNCTION IF EXISTS "{s}".admin_service_record_job_change() CASCADE; '
        f'ALTER TABLE "{s}".capture_state DROP COLUMN mode; ALTER TABLE "{s}".job_events DROP COLUMN change_id; '
        f'DROP TABLE "{s}".job_changes'
    )
