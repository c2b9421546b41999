-- +goose Up
-- The embedding queue. A chunk whose embedding could not be computed at ingest (provider down,
-- rate limited, misconfigured) is stored without a vector and gets one row here; the memory
-- engine's worker embeds it later. A row exists only while work remains: finished jobs are
-- deleted, so the table stays small. Jobs die with their chunk (ON DELETE CASCADE), so a
-- re-indexed or deleted document never leaves orphans behind.
--
-- status:
--   pending  waiting; due when next_attempt_at <= now()
--   running  claimed by a worker until locked_until (the lease); an expired lease is reclaimed
--   failed   gave up (permanent provider error, or max attempts); counted, retried only on request
CREATE TABLE embedding_jobs (
    chunk_id        uuid PRIMARY KEY REFERENCES chunks ON DELETE CASCADE,
    owner_id        text NOT NULL CHECK (owner_id <> ''),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'running' OR locked_until IS NOT NULL)
);
-- Claiming: due pending jobs of one owner in next_attempt_at order.
CREATE INDEX embedding_jobs_due_idx ON embedding_jobs (owner_id, next_attempt_at) WHERE status = 'pending';
-- Reclaiming: running jobs of one owner whose lease expired.
CREATE INDEX embedding_jobs_lease_idx ON embedding_jobs (owner_id, locked_until) WHERE status = 'running';
-- Counting pending and failed jobs per owner.
CREATE INDEX embedding_jobs_owner_status_idx ON embedding_jobs (owner_id, status);

ALTER TABLE embedding_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE embedding_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON embedding_jobs
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

-- +goose Down
DROP TABLE embedding_jobs;
