-- +goose Up
-- Issue 9: storage quotas and idempotent writes.
--
-- tenant_usage holds each owner's running totals (documents, chunks of both levels, content
-- bytes), updated by the memory engine in the same transaction as every write that changes them,
-- so a quota is checked exactly (a concurrent ingest waits on the owner's row for the instant
-- before its commit) without counting the tenant's rows on every ingest. Moving a tenant copies
-- this row like any other.
CREATE TABLE tenant_usage (
    owner_id      text PRIMARY KEY CHECK (owner_id <> ''),
    documents     bigint NOT NULL DEFAULT 0,
    chunks        bigint NOT NULL DEFAULT 0,
    content_bytes bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Backfill from what exists. FORCE ROW LEVEL SECURITY binds the table owner (this migration's
-- role) too, so it is lifted for the two statements and put back in the same transaction: nobody
-- can observe the gap (ALTER TABLE holds an exclusive lock until commit).
ALTER TABLE documents NO FORCE ROW LEVEL SECURITY;
ALTER TABLE chunks NO FORCE ROW LEVEL SECURITY;
INSERT INTO tenant_usage (owner_id, documents, content_bytes, chunks)
SELECT d.owner_id, d.n, d.b, coalesce(c.n, 0)
FROM (SELECT owner_id, count(*) AS n, coalesce(sum(content_bytes), 0) AS b FROM documents GROUP BY owner_id) d
LEFT JOIN (SELECT owner_id, count(*) AS n FROM chunks GROUP BY owner_id) c USING (owner_id);
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;

-- idempotency_keys remembers the result of a write made with an Idempotency-Key header, so a
-- client that retries (its answer was lost with a connection) gets the first answer instead of a
-- second document. The row is written in the write's own transaction: it exists if and only if
-- the write committed.
CREATE TABLE idempotency_keys (
    owner_id        text NOT NULL CHECK (owner_id <> ''),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, idempotency_key)
);
CREATE INDEX idempotency_keys_owner_created_idx ON idempotency_keys (owner_id, created_at);

ALTER TABLE tenant_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON tenant_usage
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON idempotency_keys
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE tenant_usage;
