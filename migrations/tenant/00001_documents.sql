-- +goose Up
-- Every table carries owner_id so every statement and every row-level security policy filters
-- without a join. The policies compare it with the transaction-local setting tenantmem.owner_id;
-- with no setting, current_setting(..., true) is NULL or '' and no row matches (owner_id is never '').
-- FORCE makes the policies bind the table owner too; only superusers bypass them.

CREATE TABLE documents (
    document_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id      text NOT NULL CHECK (owner_id <> ''),
    id_at_origin  text,
    document_name text NOT NULL,
    document_type text NOT NULL,
    document_date timestamptz,
    metadata      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    content_bytes bigint NOT NULL DEFAULT 0 CHECK (content_bytes >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Upsert identity. NULL id_at_origin never conflicts: such documents are always new.
    CONSTRAINT documents_owner_origin_key UNIQUE (owner_id, id_at_origin)
);
CREATE INDEX documents_owner_created_idx ON documents (owner_id, created_at DESC);
CREATE INDEX documents_owner_type_idx ON documents (owner_id, document_type);
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata jsonb_path_ops);

CREATE TABLE chunks (
    chunk_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id     uuid NOT NULL REFERENCES documents ON DELETE CASCADE,
    owner_id        text NOT NULL CHECK (owner_id <> ''),
    parent_chunk_id uuid REFERENCES chunks ON DELETE CASCADE,
    chunk_index     integer NOT NULL CHECK (chunk_index >= 0),
    chunk_level     smallint NOT NULL DEFAULT 0 CHECK (chunk_level >= 0),
    content         text NOT NULL,
    content_hash    text NOT NULL,
    token_count     integer NOT NULL CHECK (token_count >= 0),
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    search_vector   tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chunks_document_index_key UNIQUE (document_id, chunk_index)
);
CREATE INDEX chunks_owner_document_idx ON chunks (owner_id, document_id);
CREATE INDEX chunks_parent_idx ON chunks (parent_chunk_id) WHERE parent_chunk_id IS NOT NULL;
CREATE INDEX chunks_search_vector_idx ON chunks USING gin (search_vector);

-- The embedding dimension is chosen once per deployment by `provisioner init`, recorded in the
-- control schema, and handed to this migration by the migrator as the connection setting
-- tenantmem.embedding_dimension (never through the process environment). A missing setting fails.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER TABLE chunks ADD COLUMN embedding vector(%s)',
                   current_setting('tenantmem.embedding_dimension')::integer);
END
$$;
-- +goose StatementEnd
CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops);

CREATE TABLE search_history (
    search_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id     text NOT NULL CHECK (owner_id <> ''),
    query_text   text NOT NULL,
    search_type  text NOT NULL,
    filters      jsonb NOT NULL DEFAULT '{}',
    result_count integer NOT NULL DEFAULT 0,
    latency_ms   double precision NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_history_owner_created_idx ON search_history (owner_id, created_at DESC);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON documents
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

ALTER TABLE chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON chunks
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

ALTER TABLE search_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_history FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON search_history
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

-- +goose Down
DROP TABLE search_history;
DROP TABLE chunks;
DROP TABLE documents;
