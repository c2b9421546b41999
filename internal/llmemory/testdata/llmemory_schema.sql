-- llmemory's schema (v0.5.0, migrations 001_complete_schema.sql and 002_upsert_identity_contract.sql),
-- written from its documented data model (../shared/reference/llmemory-inventory.md, section 2) with
-- pgdbm's templates resolved to the schema "llmemory". Tests create it to import from.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;
CREATE SCHEMA IF NOT EXISTS llmemory;
SET search_path = llmemory, public;

CREATE TABLE llmemory.schema_migrations (
    id serial PRIMARY KEY,
    filename text NOT NULL,
    checksum text NOT NULL,
    module_name text NOT NULL,
    applied_at timestamptz DEFAULT now(),
    applied_by text,
    execution_time_ms integer,
    UNIQUE (filename, module_name)
);

CREATE TABLE llmemory.documents (
    document_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id text NOT NULL,
    id_at_origin text NOT NULL,
    document_type text NOT NULL,
    document_name text NOT NULL,
    document_date timestamptz,
    metadata jsonb DEFAULT '{}',
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);

CREATE TABLE llmemory.document_chunks (
    chunk_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id uuid NOT NULL REFERENCES llmemory.documents(document_id) ON DELETE CASCADE,
    parent_chunk_id uuid REFERENCES llmemory.document_chunks(chunk_id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    chunk_level integer NOT NULL DEFAULT 0,
    content text NOT NULL,
    content_hash text NOT NULL,
    token_count integer NOT NULL,
    metadata jsonb DEFAULT '{}',
    search_vector tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_at timestamptz DEFAULT now(),
    UNIQUE (document_id, content_hash)
);

CREATE TABLE llmemory.embedding_providers (
    provider_id text PRIMARY KEY,
    provider_type text NOT NULL CHECK (provider_type IN ('openai', 'local')),
    model_name text NOT NULL,
    dimension integer NOT NULL,
    table_name text NOT NULL,
    is_active boolean DEFAULT true,
    is_default boolean DEFAULT false,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE llmemory.embeddings_openai_3_small (
    chunk_id uuid PRIMARY KEY REFERENCES llmemory.document_chunks(chunk_id) ON DELETE CASCADE,
    embedding vector(1536) NOT NULL,
    model_version text DEFAULT 'text-embedding-3-small',
    created_at timestamptz DEFAULT now()
);

INSERT INTO llmemory.embedding_providers (provider_id, provider_type, model_name, dimension, table_name, is_default)
VALUES ('openai-text-embedding-3-small', 'openai', 'text-embedding-3-small', 1536, 'embeddings_openai_3_small', true);

CREATE TABLE llmemory.embedding_queue (
    queue_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    chunk_id uuid REFERENCES llmemory.document_chunks(chunk_id) ON DELETE CASCADE,
    provider_id text REFERENCES llmemory.embedding_providers(provider_id),
    status text DEFAULT 'pending',
    retry_count integer DEFAULT 0,
    error_message text,
    created_at timestamptz DEFAULT now(),
    processed_at timestamptz,
    UNIQUE (chunk_id, provider_id)
);

CREATE TABLE llmemory.search_history (
    search_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id text NOT NULL,
    id_at_origin text NOT NULL,
    query_text text NOT NULL,
    provider_id text REFERENCES llmemory.embedding_providers(provider_id),
    search_type text NOT NULL,
    metadata_filter jsonb,
    result_count integer,
    results jsonb,
    feedback jsonb,
    created_at timestamptz DEFAULT now()
);

CREATE INDEX idx_embeddings_openai_3_small_embedding ON llmemory.embeddings_openai_3_small
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 200);
CREATE INDEX idx_chunks_search_vector_gin ON llmemory.document_chunks USING gin (search_vector);
CREATE INDEX idx_documents_owner ON llmemory.documents (owner_id);
CREATE INDEX idx_chunks_document ON llmemory.document_chunks (document_id, chunk_level, chunk_index);

-- 002_upsert_identity_contract.sql
ALTER TABLE llmemory.documents ADD CONSTRAINT uq_documents_owner_id_at_origin UNIQUE (owner_id, id_at_origin);

INSERT INTO llmemory.schema_migrations (filename, checksum, module_name)
VALUES ('001_complete_schema.sql', 'test', 'llmemory'), ('002_upsert_identity_contract.sql', 'test', 'llmemory');
