-- +goose Up
-- search_id was one identity sequence per schema: in the shared tier every tenant's searches
-- advanced it, so the gaps between a tenant's own ids told it how many searches the others ran.
-- Ids are now numbered per owner (the writer assigns max + 1, ...), and the primary key is
-- (owner_id, search_id), which also serves newest-first reads and pruning. Existing ids keep their
-- values; new ones continue from each owner's own maximum.
ALTER TABLE search_history ALTER COLUMN search_id DROP IDENTITY IF EXISTS;
ALTER TABLE search_history DROP CONSTRAINT search_history_pkey;
ALTER TABLE search_history ADD CONSTRAINT search_history_pkey PRIMARY KEY (owner_id, search_id);
DROP INDEX IF EXISTS search_history_owner_id_idx;

-- +goose Down
CREATE INDEX search_history_owner_id_idx ON search_history (owner_id, search_id DESC);
ALTER TABLE search_history DROP CONSTRAINT search_history_pkey;
-- Down cannot restore one global numbering without renumbering: give rows unique ids again.
UPDATE search_history SET search_id = s.n FROM (
    SELECT owner_id, search_id, row_number() OVER (ORDER BY created_at, owner_id, search_id) AS n FROM search_history
) s WHERE search_history.owner_id = s.owner_id AND search_history.search_id = s.search_id;
ALTER TABLE search_history ADD PRIMARY KEY (search_id);
ALTER TABLE search_history ALTER COLUMN search_id ADD GENERATED ALWAYS AS IDENTITY;
-- +goose StatementBegin
DO $$
BEGIN
    PERFORM setval(pg_get_serial_sequence('search_history', 'search_id'),
                   coalesce((SELECT max(search_id) FROM search_history), 0) + 1, false);
END
$$;
-- +goose StatementEnd
