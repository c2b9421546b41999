-- +goose Up
-- The tenants of this database that have embedding jobs to do. A placement is a PostgreSQL
-- database that holds tenant tables (the main one, with the shared schema and the schema-tier
-- schemas; later, other servers' databases); each has its own copy of this schema.
--
-- Ingest writes a tenant's row in the same transaction that queues its jobs, so the embedding
-- worker finds pending work with one probe of embedding_work_due_idx, never by visiting every
-- tenant. The worker claims due rows with SKIP LOCKED (pushing due_at out by its lease), then sets
-- due_at to the tenant's next due job, or deletes the row when no job is left, but only if
-- generation has not moved since its claim: an ingest that raced with it keeps the row.
--
-- There is no row-level security here: the rows name tenants, not their data; only the router's
-- worker and ingest path touch the table, and the router role may act for every tenant anyway.
CREATE TABLE embedding_work (
    schema_name text NOT NULL CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    owner_id    text NOT NULL CHECK (owner_id <> ''),
    -- When the worker should look at the tenant next.
    due_at      timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every ingest that queues jobs; a worker deletes or reschedules the row only if it
    -- is still the generation it claimed.
    generation  bigint NOT NULL DEFAULT 1,
    -- Consecutive looks that failed (the queue could not be read): the retry backs off.
    failures    integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, owner_id)
);
CREATE INDEX embedding_work_due_idx ON embedding_work (due_at);

-- +goose Down
DROP TABLE embedding_work;
