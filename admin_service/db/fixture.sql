-- The tables other services own, as they are in production. Used only for tests, the
-- embedded default and demo data: the service never creates or alters these in a real
-- deployment. Idempotent, so it can run on every embedded start.
CREATE SCHEMA IF NOT EXISTS auth;
CREATE SCHEMA IF NOT EXISTS archive;

CREATE TABLE IF NOT EXISTS auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username varchar(100) UNIQUE,
    email varchar(255) UNIQUE NOT NULL,
    password_hash varchar(255) NOT NULL DEFAULT '',
    user_type varchar(20) NOT NULL DEFAULT 'user'
        CHECK (user_type IN ('user', 'admin', 'superadmin', 'moderator')),
    is_active boolean NOT NULL DEFAULT true,
    token_balance integer NOT NULL DEFAULT 0,
    last_login timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS archive.analysis_results (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    test_data jsonb,
    test_result jsonb,
    raw_responses jsonb,
    is_public boolean NOT NULL DEFAULT false,
    chatbot_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS archive.analysis_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id varchar(255) UNIQUE NOT NULL,
    user_id uuid NOT NULL,
    status varchar(50) NOT NULL DEFAULT 'queued',
    result_id uuid,
    error_message text,
    completed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    assessment_name varchar(255) NOT NULL DEFAULT 'AI-Driven Talent Mapping',
    priority integer NOT NULL DEFAULT 0,
    retry_count integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL DEFAULT 3,
    processing_started_at timestamptz
);

CREATE INDEX IF NOT EXISTS idx_analysis_jobs_status ON archive.analysis_jobs (status);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_created_at ON archive.analysis_jobs (created_at);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_user_id ON archive.analysis_jobs (user_id);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_assessment_name ON archive.analysis_jobs (assessment_name);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_queue ON archive.analysis_jobs (status, priority, created_at);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_retry ON archive.analysis_jobs (status, retry_count, max_retries);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_user_status ON archive.analysis_jobs (user_id, status);
CREATE INDEX IF NOT EXISTS idx_analysis_jobs_user_status_created ON archive.analysis_jobs (user_id, status, created_at);

CREATE TABLE IF NOT EXISTS archive.system_metrics (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    metric_name varchar(100) NOT NULL,
    metric_value numeric,
    metric_data jsonb,
    recorded_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
