-- +goose Up
-- Lexical search with BM25 over each owner's own statistics (docs/memory.md, "Lexical ranking").
--
-- chunk_terms is an inverted index kept in an ordinary table, one row per (owner, lexeme, leaf
-- chunk) with the term frequency and the chunk's length in lexemes. Its primary key leads with
-- owner_id, so a lookup reads only the owner's postings: under row-level security the planner can
-- use it (text equality is LEAKPROOF, unlike the full-text match operator @@ that the GIN index on
-- search_vector needed), and in the shared tier the cost of a lookup does not depend on whether
-- other tenants use the word. Document frequencies are counted from it at query time, per owner.
-- chunk_stats holds each owner's number of leaf chunks and their total length (BM25's N and
-- average length), and is also the engine's cheap answer to "how big is this tenant".
-- Statement-level triggers on chunks keep both in step with every insert and delete (ingest,
-- upsert, deletes, cascades), in the same transaction.
-- impact is the posting's BM25 term-frequency part for a reference length of 100 lexemes, times
-- 1000: postings are kept in impact order within (owner, term), so a query reads a common term's
-- best postings first and can stop after Config.LexicalDepth of them.
CREATE TABLE chunk_terms (
    owner_id text NOT NULL CHECK (owner_id <> ''),
    term     text NOT NULL,
    impact   integer NOT NULL,
    chunk_id uuid NOT NULL,
    tf       integer NOT NULL,
    dl       integer NOT NULL,
    CONSTRAINT chunk_terms_pkey PRIMARY KEY (owner_id, term, impact, chunk_id) INCLUDE (tf, dl)
);

-- The impact of a posting (deterministic: insert and delete compute the same value).
-- +goose StatementBegin
CREATE FUNCTION chunk_term_impact(tf integer, dl integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN floor(1000 * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / 100.0)))::integer;
-- +goose StatementEnd

CREATE TABLE chunk_stats (
    owner_id   text PRIMARY KEY CHECK (owner_id <> ''),
    leaf_count bigint NOT NULL DEFAULT 0,
    term_count bigint NOT NULL DEFAULT 0
);

-- search_vector was generated with the 'english' configuration. It becomes an ordinary column
-- that ingest fills, for leaves only, with the tenant's configuration (registry
-- text_search_config); existing values stay.
ALTER TABLE chunks ALTER COLUMN search_vector DROP EXPRESSION;
-- Nothing uses the shared GIN index any more (lexical search reads chunk_terms), and with the
-- opt-in LEAKPROOF @@ it was the shared-tier timing leak: drop it.
DROP INDEX IF EXISTS chunks_search_vector_idx;

-- +goose StatementBegin
CREATE FUNCTION chunk_terms_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunk_terms (owner_id, term, impact, chunk_id, tf, dl)
    SELECT n.owner_id, t.lexeme, chunk_term_impact(greatest(cardinality(t.positions), 1), l.dl), n.chunk_id,
           greatest(cardinality(t.positions), 1), l.dl
    FROM new_chunks n
    CROSS JOIN LATERAL (SELECT coalesce(sum(greatest(cardinality(u.positions), 1)), 0)::integer AS dl
                        FROM unnest(n.search_vector) u) l
    CROSS JOIN LATERAL unnest(n.search_vector) t
    WHERE n.chunk_level = 0 AND n.search_vector IS NOT NULL;

    INSERT INTO chunk_stats AS s (owner_id, leaf_count, term_count)
    SELECT n.owner_id, count(*),
           coalesce(sum((SELECT sum(greatest(cardinality(u.positions), 1)) FROM unnest(n.search_vector) u)), 0)
    FROM new_chunks n WHERE n.chunk_level = 0
    GROUP BY n.owner_id
    ON CONFLICT (owner_id) DO UPDATE SET leaf_count = s.leaf_count + excluded.leaf_count,
                                         term_count = s.term_count + excluded.term_count;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION chunk_terms_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms p
    USING (SELECT o.owner_id, o.chunk_id, t.lexeme, chunk_term_impact(greatest(cardinality(t.positions), 1), l.dl) AS impact
           FROM old_chunks o
           CROSS JOIN LATERAL (SELECT coalesce(sum(greatest(cardinality(u.positions), 1)), 0)::integer AS dl
                               FROM unnest(o.search_vector) u) l
           CROSS JOIN LATERAL unnest(o.search_vector) t
           WHERE o.chunk_level = 0 AND o.search_vector IS NOT NULL) d
    WHERE p.owner_id = d.owner_id AND p.term = d.lexeme AND p.impact = d.impact AND p.chunk_id = d.chunk_id;

    UPDATE chunk_stats s SET leaf_count = greatest(s.leaf_count - x.n, 0), term_count = greatest(s.term_count - x.dl, 0)
    FROM (SELECT o.owner_id, count(*) AS n,
                 coalesce(sum((SELECT sum(greatest(cardinality(u.positions), 1)) FROM unnest(o.search_vector) u)), 0) AS dl
          FROM old_chunks o WHERE o.chunk_level = 0 GROUP BY o.owner_id) x
    WHERE s.owner_id = x.owner_id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- The functions run as the caller (the router, under row-level security) but always on the
-- tables of the schema they were created in, whatever the caller's search_path.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION chunk_terms_insert() SET search_path = %I, pg_catalog, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION chunk_terms_delete() SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

CREATE TRIGGER chunk_terms_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_insert();
CREATE TRIGGER chunk_terms_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_delete();

-- Backfill from the rows that exist (parents no longer keep a tsvector). The owner role is bound
-- by the (FORCEd) policies, which see nothing without an owner setting, so FORCE is lifted for
-- this transaction only.
ALTER TABLE chunks NO FORCE ROW LEVEL SECURITY;
UPDATE chunks SET search_vector = NULL WHERE chunk_level > 0 AND search_vector IS NOT NULL;
INSERT INTO chunk_terms (owner_id, term, impact, chunk_id, tf, dl)
SELECT c.owner_id, t.lexeme, chunk_term_impact(greatest(cardinality(t.positions), 1), l.dl), c.chunk_id,
       greatest(cardinality(t.positions), 1), l.dl
FROM chunks c
CROSS JOIN LATERAL (SELECT coalesce(sum(greatest(cardinality(u.positions), 1)), 0)::integer AS dl FROM unnest(c.search_vector) u) l
CROSS JOIN LATERAL unnest(c.search_vector) t
WHERE c.chunk_level = 0 AND c.search_vector IS NOT NULL;
INSERT INTO chunk_stats (owner_id, leaf_count, term_count)
SELECT c.owner_id, count(*), coalesce(sum((SELECT sum(greatest(cardinality(u.positions), 1)) FROM unnest(c.search_vector) u)), 0)
FROM chunks c WHERE c.chunk_level = 0 GROUP BY c.owner_id;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;

ALTER TABLE chunk_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunk_terms FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON chunk_terms
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));
ALTER TABLE chunk_stats ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunk_stats FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON chunk_stats
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

-- +goose Down
DROP TRIGGER chunk_terms_delete ON chunks;
DROP TRIGGER chunk_terms_insert ON chunks;
DROP FUNCTION chunk_terms_delete();
DROP FUNCTION chunk_terms_insert();
DROP FUNCTION chunk_term_impact(integer, integer);
DROP TABLE chunk_stats;
DROP TABLE chunk_terms;
CREATE INDEX chunks_search_vector_idx ON chunks USING gin (search_vector);
