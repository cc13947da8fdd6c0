"""What the workers and instances of a deployment must count together, in the service's schema.

- `rate_limits` (UNLOGGED: no WAL, one row per client key): the moving windows of RATE_LIMIT and
  AUTH_FAILURE_LIMIT (admin_service/limits_store.py), as hit counts in 61 buckets of 1/60 of
  the window each (a constant 61 integers per key, whatever the limit), read and written by
  `rate_limit_acquire` in one call per request. PostgreSQL's clock places the hits, so every
  instance agrees on the window.
- `verified_tokens`: fingerprints of tokens that verified, until their exp (admin_service/verified.py):
  the brute-force guard never locks out a token that verified before, on any worker.
- `live_workers` / `live_connections` (UNLOGGED): open SSE streams and Socket.IO sockets per
  user, counted against the per-user caps across every worker (admin_service/live/caps.py);
  a worker's rows count only while its lease is fresh, so a killed worker's are freed.

Revision ID: 0003
Revises: 0002
"""

from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f"""
        CREATE UNLOGGED TABLE "{s}".rate_limits (
            key text PRIMARY KEY,
            newest bigint NOT NULL,           -- the newest bucket: floor(epoch / (window / 60))
            counts integer[] NOT NULL,        -- hits per bucket, oldest first, 61 of them, the last the newest
            expires_at double precision NOT NULL  -- when the newest hit leaves the window: prunable after
        );

        -- A key's buckets as of bucket `cur`: shifted left by the buckets that passed since `newest`.
        CREATE FUNCTION "{s}".rate_limit_shifted(counts integer[], newest bigint, cur bigint) RETURNS integer[]
        LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE
                WHEN cur <= newest THEN counts
                WHEN cur - newest >= cardinality(counts) THEN array_fill(0, ARRAY[cardinality(counts)])
                ELSE counts[(cur - newest + 1)::integer:] || array_fill(0, ARRAY[(cur - newest)::integer])
            END
        $$;

        -- When the oldest counted hit leaves the window (the bucket after its own, one window on),
        -- less the window: limits' "start of the window". No hit: now.
        CREATE FUNCTION "{s}".rate_limit_oldest(counts integer[], cur bigint, width double precision, now_s double precision)
        RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
            SELECT coalesce(
                (SELECT (cur - cardinality(counts) + i + 1) * width FROM unnest(counts) WITH ORDINALITY AS u(c, i)
                 WHERE c > 0 ORDER BY i LIMIT 1),
                now_s)
        $$;

        -- Take `amount` hits of a window of `expiry` seconds holding at most `lim`; the window after
        -- the call: acquired, its start (limits' sense) and its hit count. The window is 60 buckets
        -- plus the one its start falls in, all counted: a hit counts up to 1/60 of the window longer
        -- than exactly, never shorter, so no window of `expiry` seconds ever holds more than `lim`.
        CREATE FUNCTION "{s}".rate_limit_acquire(p_key text, lim integer, expiry double precision, amount integer,
                                                 OUT acquired boolean, OUT oldest double precision, OUT hit_count integer)
        LANGUAGE plpgsql AS $$
        DECLARE
            width double precision := expiry / 60;
            now_s double precision := extract(epoch FROM clock_timestamp());
            cur bigint := floor(now_s / width);
            row_newest bigint;
            c integer[];
        BEGIN
            SELECT r.newest, r.counts INTO row_newest, c FROM "{s}".rate_limits r WHERE r.key = p_key FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO "{s}".rate_limits (key, newest, counts, expires_at)
                VALUES (p_key, cur, array_fill(0, ARRAY[61]), 0) ON CONFLICT (key) DO NOTHING;
                SELECT r.newest, r.counts INTO row_newest, c FROM "{s}".rate_limits r WHERE r.key = p_key FOR UPDATE;
            END IF;
            c := "{s}".rate_limit_shifted(c, row_newest, cur);
            cur := greatest(cur, row_newest);
            hit_count := (SELECT sum(x) FROM unnest(c) AS x)::integer;
            acquired := hit_count + amount <= lim;
            IF acquired AND amount > 0 THEN
                c[61] := c[61] + amount;
                hit_count := hit_count + amount;
            END IF;
            UPDATE "{s}".rate_limits SET newest = cur, counts = c, expires_at = (cur + 2) * width + expiry WHERE key = p_key;
            oldest := "{s}".rate_limit_oldest(c, cur, width, now_s);
        END
        $$;

        -- The window without taking a hit: its start (as above) and its hit count.
        CREATE FUNCTION "{s}".rate_limit_window(p_key text, expiry double precision,
                                                OUT oldest double precision, OUT hit_count integer)
        LANGUAGE plpgsql STABLE AS $$
        DECLARE
            width double precision := expiry / 60;
            now_s double precision := extract(epoch FROM clock_timestamp());
            cur bigint := floor(now_s / width);
            c integer[];
        BEGIN
            SELECT "{s}".rate_limit_shifted(r.counts, r.newest, cur), greatest(cur, r.newest) INTO c, cur
            FROM "{s}".rate_limits r WHERE r.key = p_key;
            IF NOT FOUND THEN
                oldest := now_s;
                hit_count := 0;
                RETURN;
            END IF;
            hit_count := (SELECT sum(x) FROM unnest(c) AS x)::integer;
            oldest := "{s}".rate_limit_oldest(c, cur, width, now_s);
        END
        $$;

        CREATE TABLE "{s}".verified_tokens (
            fingerprint bytea PRIMARY KEY,  -- sha256 of the whole token
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX verified_tokens_expires_at ON "{s}".verified_tokens (expires_at);

        CREATE UNLOGGED TABLE "{s}".live_workers (
            worker text PRIMARY KEY,        -- host:pid:random, one per worker process
            expires_at timestamptz NOT NULL -- its lease: renewed every few seconds while it runs
        );
        CREATE UNLOGGED TABLE "{s}".live_connections (
            id text PRIMARY KEY,
            worker text NOT NULL,
            kind text NOT NULL,             -- sse | socketio
            user_id text NOT NULL,
            opened_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX live_connections_user ON "{s}".live_connections (user_id, kind);
        CREATE INDEX live_connections_worker ON "{s}".live_connections (worker);

        -- Admit one more connection of this kind for this user unless `cap` are open on the
        -- workers whose lease is fresh; renews the calling worker's lease. One user at a time
        -- (a transaction-scoped advisory lock), so two workers never both admit the last place.
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


def downgrade() -> None:
    s = context.config.attributes["schema"]
    op.execute(
        f'DROP FUNCTION "{s}".live_admit(text, text, text, text, integer, double precision); '
        f'DROP TABLE "{s}".live_connections; DROP TABLE "{s}".live_workers; DROP TABLE "{s}".verified_tokens; '
        f'DROP FUNCTION "{s}".rate_limit_window(text, double precision); '
        f'DROP FUNCTION "{s}".rate_limit_acquire(text, integer, double precision, integer); '
        f'DROP FUNCTION "{s}".rate_limit_oldest(integer[], bigint, double precision, double precision); '
        f'DROP FUNCTION "{s}".rate_limit_shifted(integer[], bigint, bigint); '
        f'DROP TABLE "{s}".rate_limits'
    )
