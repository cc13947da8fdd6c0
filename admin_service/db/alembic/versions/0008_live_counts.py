"""Per-user live connection caps in constant time: one row per (user, kind, worker) holding how
many of that user's connections the worker has open (`live_counts`, UNLOGGED), instead of one
row per connection (`live_connections`, dropped here).

`live_admit` counted the user's connection rows on every admission, under the user's advisory
lock: O(n) per admission, so opening n streams of one user cost O(n^2) and took the lock longer
as they grew. At 10,000 streams of one admin each admission held a pooled connection long enough
that the pool ran dry: the rate limiter's store call timed out (a 503, a refused stream) and cap
checks timed out (admitted unrecorded). Now an admission sums one row per worker of the user.

Same rules as before: the sum counts only workers whose lease is fresh (a killed worker's places
free themselves LEASE_S later), admissions of one user are serialised (two workers never both take
the last place), a closed connection frees its place at once (`live_release`, which takes every
place a worker's connections freed meanwhile in one statement).

Revision ID: 0008_live_counts
Revises: 0007_closed_days
"""

from alembic import context, op

revision = "0008_live_counts"
down_revision = "0007_closed_days"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        DROP FUNCTION "{s}".live_admit(text, text, text, text, integer, double precision);
        DROP TABLE "{s}".live_connections;

        CREATE UNLOGGED TABLE "{s}".live_counts (
            user_id text NOT NULL,
            kind text NOT NULL,             -- sse | socketio
            worker text NOT NULL,           -- host:pid:random (live_workers.worker)
            n integer NOT NULL CHECK (n >= 0),
            PRIMARY KEY (user_id, kind, worker)
        );
        CREATE INDEX live_counts_worker ON "{s}".live_counts (worker);

        -- Admit one more connection of this kind for this user unless `cap` are open on the
        -- workers whose lease is fresh; renews the calling worker's lease. One user at a time
        -- (a transaction-scoped advisory lock), so two workers never both admit the last place.
        CREATE FUNCTION "{s}".live_admit(p_worker text, p_kind text, p_user text, cap integer, lease_s double precision)
        RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended('admin-service-live:' || p_kind || ':' || p_user, 0));
            INSERT INTO "{s}".live_workers (worker, expires_at) VALUES (p_worker, now() + make_interval(secs => lease_s))
            ON CONFLICT (worker) DO UPDATE SET expires_at = excluded.expires_at;
            IF (SELECT COALESCE(sum(c.n), 0) FROM "{s}".live_counts c JOIN "{s}".live_workers w USING (worker)
                WHERE c.user_id = p_user AND c.kind = p_kind AND w.expires_at > now()) >= cap THEN
                RETURN false;
            END IF;
            INSERT INTO "{s}".live_counts (user_id, kind, worker, n) VALUES (p_user, p_kind, p_worker, 1)
            ON CONFLICT (user_id, kind, worker) DO UPDATE SET n = "{s}".live_counts.n + 1;
            RETURN true;
        END
        $$;

        -- Closed connections' places, counts(i) of kinds(i) for users(i), in one statement (never
        -- below zero: a place admitted while the database was unreachable was never recorded, and
        -- is not released either).
        CREATE FUNCTION "{s}".live_release(p_worker text, kinds text[], users text[], counts integer[])
        RETURNS void LANGUAGE sql AS $$
            UPDATE "{s}".live_counts c SET n = greatest(0, c.n - d.n)
            FROM unnest(kinds, users, counts) AS d(kind, user_id, n)
            WHERE c.worker = p_worker AND c.kind = d.kind AND c.user_id = d.user_id
        $$;
        """
    )


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        DROP FUNCTION "{s}".live_release(text, text[], text[], integer[]);
        DROP FUNCTION "{s}".live_admit(text, text, text, integer, double precision);
        DROP TABLE "{s}".live_counts;
        CREATE UNLOGGED TABLE "{s}".live_connections (
            id text PRIMARY KEY,
            worker text NOT NULL,
            kind text NOT NULL,
            user_id text NOT NULL,
            opened_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX live_connections_user ON "{s}".live_connections (user_id, kind);
        CREATE INDEX live_connections_worker ON "{s}".live_connections (worker);
        CREATE FUNCTION "{s}".live_admit(p_id text, p_worker text, p_kind text, p_user text, cap integer,
                                         lease_s double precision)
        RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended('admin-service-live:' || p_kind || ':' || p_user, 0));
            INSERT INTO "{s}".live_workers (worker, expires_at) VALUES (p_worker, now() + make_interval(secs => lease_s))
            ON CONFLICT (worker) DO UPDATE SET expires_at = excluded.expires_at;
            IF (SELECT count(*) FROM "{s}".live_connections c JOIN "{s}".live_workers w USING (worker)
                WHERE c.user_id = p_user AND c.kind = p_kind AND w.expires_at > now()) >= cap THEN
                RETURN false;
            END IF;
            INSERT INTO "{s}".live_connections (id, worker, kind, user_id) VALUES (p_id, p_worker, p_kind, p_user);
            RETURN true;
        END
        $$;
        """
    )
