-- +goose Up
-- Each tenant's text search configuration (a pg_catalog configuration: english, simple for
-- mixed languages, german, ...), chosen at creation and used to index its chunks and read its
-- queries. Existing tenants were indexed with english.
ALTER TABLE tenants ADD COLUMN text_search_config text NOT NULL DEFAULT 'english'
    CHECK (text_search_config ~ '^[a-z_][a-z0-9_]{0,62}$');

-- +goose Down
ALTER TABLE tenants DROP COLUMN text_search_config;
