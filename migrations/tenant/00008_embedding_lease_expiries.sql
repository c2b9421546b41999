-- +goose Up
-- How many times a job's lease expired while it was running: its worker died (or hung) with the
-- job in hand. Only this count can make a job fail without a permanent provider error, so that a
-- chunk that kills its worker does not do so forever; provider outages, however long, never fail
-- a job (they only delay it). Adding a column with a constant default is a catalog-only change.
ALTER TABLE embedding_jobs ADD COLUMN lease_expiries integer NOT NULL DEFAULT 0 CHECK (lease_expiries >= 0);

-- +goose Down
ALTER TABLE embedding_jobs DROP COLUMN lease_expiries;
