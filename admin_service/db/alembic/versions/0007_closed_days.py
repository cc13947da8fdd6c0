"""Closed days rolled up (jobs/days.py): per local day, the jobs created in it by their status
now, and beside them the failure triage's groups per signature and assessment (count, first and
last seen, newest message and newest job ids: triage/rollup.py), so that a range of days reads
a row per day (and group) instead of every job created in it.

`closed_days` holds one row per rolled-up day and its state: capture bumps `dirty_seq` (from
`closed_days_seq`) in its own transaction when it logs a change that may move a figure of that
day; a day is read from here only while `built_seq >= dirty_seq` (the rebuild records the
`dirty_seq` it read before aggregating). Keyed by the version of what the rebuild writes and
the time zone, so a rolling upgrade or another STATS_TIMEZONE never reads rows it did not build.

Revision ID: 0007_closed_days
Revises: 0006_list_counts
"""

from alembic import context, op

revision = "0007_closed_days"
down_revision = "0006_list_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'CREATE SEQUENCE "{s}".closed_days_seq')
    op.execute(
        f"""
        CREATE TABLE "{s}".closed_days (
            version text NOT NULL,            -- triage/rollup.py ROLLUP_VERSION (counts' and signature rules')
            tz text NOT NULL,                 -- the time zone whose local day this is
            day date NOT NULL,
            day_start timestamptz NOT NULL,   -- [day_start, day_end): the day's instants (capture marks by them)
            day_end timestamptz NOT NULL,
            dirty_seq bigint NOT NULL,
            built_seq bigint,                 -- NULL until first built
            built_at timestamptz,
            total bigint,                     -- jobs created in the day; of them by status now:
            completed bigint,
            failed bigint,
            cancelled bigint,
            PRIMARY KEY (version, tz, day)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE "{s}".failure_rollup (
            version text NOT NULL,
            tz text NOT NULL,
            day date NOT NULL,
            signature text NOT NULL,
            assessment_name text,             -- the jobs' own value (NULL included)
            n bigint NOT NULL,
            first_seen timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            example text,                     -- the newest job's raw message
            sample_ids uuid[] NOT NULL,       -- the newest jobs, newest first
            sample_created timestamptz[] NOT NULL,
            FOREIGN KEY (version, tz, day) REFERENCES "{s}".closed_days ON DELETE CASCADE
        )
        """
    )
    op.execute(f'CREATE INDEX failure_rollup_day ON "{s}".failure_rollup (version, tz, day)')
    # Days are read only while the process that marks them holds this lease: a capture leader of
    # a version that does not mark (a rolling upgrade) lets it lapse, and the next one that does
    # marks every day dirty before renewing it.
    op.execute(
        f"""
        CREATE TABLE "{s}".closed_days_lease (
            id integer PRIMARY KEY CHECK (id = 1),
            holder text,
            until timestamptz NOT NULL
        )
        """
    )
    op.execute(f"INSERT INTO \"{s}\".closed_days_lease (id, until) VALUES (1, '-infinity')")


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(f'DROP TABLE IF EXISTS "{s}".failure_rollup, "{s}".closed_days, "{s}".closed_days_lease')
    op.execute(f'DROP SEQUENCE IF EXISTS "{s}".closed_days_seq')
