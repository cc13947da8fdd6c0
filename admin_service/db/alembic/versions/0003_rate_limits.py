"""What the workers and instances of a deployment must count together, in the service's schema.

- `rate_limits` (UNLOGGED: no WAL, one row per client key): the moving windows of RATE_LIMIT and
  AUTH_FAILURE_LIMIT (admin_service/limits_store.py), an array of the window's hit times per
  key, read and written by `rate_limit_acquire` in one call per request. PostgreSQL's clock
  stamps the hits, so every instance agrees on the window.
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
            hits double precision[] NOT NULL DEFAULT '{{}}',  -- epoch seconds, oldest first
            expires_at double precision NOT NULL             -- the newest hit + the window: prunable after
        );

        -- Take `amount` hits of a moving window of `expiry` seconds holding at most `lim`; the
        -- window after the call: acquired, its oldest hit (or now), its hit count.
        CREATE FUNCTION "{s}".rate_limit_acquire(p_key text, lim integer, expiry double precision, amount integer,
                                                 OUT acquired boolean, OUT oldest double precision, OUT hit_count integer)
        LANGUAGE plpgsql AS $$
        DECLARE
            now_s double precision := extract(epoch FROM clock_timestamp());
            kept double precision[];
        BEGIN
            SELECT r.hits INTO kept FROM "{s}".rate_limits r WHERE r.key = p_key FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO "{s}".rate_limits (key, expires_at) VALUES (p_key, 0) ON CONFLICT (key) DO NOTHING;
                SELECT r.hits INTO kept FROM "{s}".rate_limits r WHERE r.key = p_key FOR UPDATE;
            END IF;
            kept := ARRAY(SELECT h FROM unnest(kept) WITH ORDINALITY AS u(h, i) WHERE h > now_s - expiry ORDER BY i);
            acquired := cardinality(kept) + amount <= lim;
            IF acquired AND amount > 0 THEN
                kept := kept || array_fill(now_s, ARRAY[amount]);
            END IF;
            UPDATE "{s}".rate_limits SET hits = kept, expires_at = now_s + expiry WHERE key = p_key;
            oldest := coalesce(kept[1], now_s);
            hit_count := cardinality(kept);
        END
        $$;

        -- The window without taking a hit: its oldest hit (or now) and its hit count.
        CREATE FUNCTION "{s}".rate_limit_window(p_key text, expiry double precision,
                                                OUT oldest double precision, OUT hit_count integer)
        LANGUAGE sql STABLE AS $$
            SELECT coalesce(min(h), extract(epoch FROM clock_timestamp())), count(h)::integer
            FROM "{s}".rate_limits r, unnest(r.hits) AS h
            WHERE r.key = p_key AND h > extract(epoch FROM clock_timestamp()) - expiry
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
        f'DROP TABLE "{s}".rate_limits'
    )
