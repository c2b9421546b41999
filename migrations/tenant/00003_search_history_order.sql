-- +goose Up
-- Search history is read newest first and pruned to the newest N rows per tenant, both in
-- insertion order (search_id), which, unlike created_at (the transaction start), is unique.
CREATE INDEX search_history_owner_id_idx ON search_history (owner_id, search_id DESC);

-- +goose Down
DROP INDEX search_history_owner_id_idx;
