-- +goose Up
-- How many times a job's lease expired while it was running: its worker died (or hung) with the
-- job in hand. Only this count can make a job fail without a permanent provider error, so that a
-- chunk that kills its worker does not do so forever; provider outages, however long, never fail
-- a job (they only delay it).
--
-- The column is added without a DEFAULT clause and given its default afterwards: in PostgreSQL 15,
-- ADD COLUMN ... DEFAULT reads the whole of pg_index (every index of every schema), so with 10,000
-- schemas each run of this migration would cost more than the last. Jobs queued before it keep
-- NULL, which the worker reads as 0. The check is NOT VALID for the same reason (validating it
-- would read the table, which row-level security hides from the owner anyway): new rows obey it.
ALTER TABLE embedding_jobs ADD COLUMN lease_expiries integer;
ALTER TABLE embedding_jobs ALTER COLUMN lease_expiries SET DEFAULT 0;
ALTER TABLE embedding_jobs ADD CONSTRAINT embedding_jobs_lease_expiries_check CHECK (lease_expiries >= 0) NOT VALID;

-- +goose Down
ALTER TABLE embedding_jobs DROP COLUMN lease_expiries;
