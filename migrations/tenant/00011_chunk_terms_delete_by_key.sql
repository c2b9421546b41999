-- +goose Up
-- Issue 11: deletes of chunks find their BM25 postings through the whole primary key of
-- chunk_terms. The trigger of migration 00006 joined chunk_terms to the postings of the deleted
-- chunks with the impact computed inside the join condition. Under row-level security (the
-- router, the owner role) a condition may only be checked before the policy's when it is
-- leakproof, and that computation is not: the planner then bounded each lookup by owner_id and
-- chunk_id alone and read every posting of the owner for every posting deleted (500 chunks of a
-- 10,000-chunk tenant: 52 s; a move's cleanup of a 35,000-chunk tenant: more than 10 minutes).
-- The postings' keys are now computed first, in a MATERIALIZED CTE, so the join compares column
-- with column (text, integer and uuid equality are leakproof) and the index serves all four.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION chunk_terms_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS MATERIALIZED (
        SELECT o.owner_id, t.lexeme AS term, chunk_term_impact(greatest(cardinality(t.positions), 1), l.dl) AS impact, o.chunk_id
        FROM old_chunks o
        CROSS JOIN LATERAL (SELECT coalesce(sum(greatest(cardinality(u.positions), 1)), 0)::integer AS dl
                            FROM unnest(o.search_vector) u) l
        CROSS JOIN LATERAL unnest(o.search_vector) t
        WHERE o.chunk_level = 0 AND o.search_vector IS NOT NULL
    )
    DELETE FROM chunk_terms p USING d
    WHERE p.owner_id = d.owner_id AND p.term = d.term AND p.impact = d.impact AND p.chunk_id = d.chunk_id;

    UPDATE chunk_stats s SET leaf_count = greatest(s.leaf_count - x.n, 0), term_count = greatest(s.term_count - x.dl, 0)
    FROM (SELECT o.owner_id, count(*) AS n,
                 coalesce(sum((SELECT sum(greatest(cardinality(u.positions), 1)) FROM unnest(o.search_vector) u)), 0) AS dl
          FROM old_chunks o WHERE o.chunk_level = 0 GROUP BY o.owner_id) x
    WHERE s.owner_id = x.owner_id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- CREATE OR REPLACE resets the function's settings: it always works on this schema's tables.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION chunk_terms_delete() SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION chunk_terms_delete() RETURNS trigger LANGUAGE plpgsql AS $$
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
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION chunk_terms_delete() SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd
