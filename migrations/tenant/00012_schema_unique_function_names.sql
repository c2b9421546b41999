-- +goose Up
-- Issue 12: no function of a tenant schema shares its name with another schema's. PostgreSQL finds
-- a function by name (a trigger's EXECUTE FUNCTION, a call inside a statement or a plpgsql body,
-- ALTER FUNCTION) through a catalog cache list of every function of that name in the database,
-- whichever schema holds it, and every backend rebuilds those lists after any function is
-- created, changed or dropped anywhere. With the names of migrations 00006 and 00009 in every
-- schema, each tenant creation rebuilt lists as long as the fleet: 42-62 ms per name lookup at
-- 5,200 schemas, server CPU per created tenant 76 ms at the first 1,000 schemas and 300 ms at
-- 5,000 (make bench-scale). The functions are now named after the schema's oid, so each list holds
-- one function; the trigger names do not change.
--
-- The suffix is the oid the schema had when the functions were made: a dump and restore keeps
-- the names and gives the schema another oid, so nothing may find these functions by computing
-- the name again. A later migration reaches them through their triggers (pg_trigger.tgfoid), as
-- the Down below does.
--
-- The generator of migration 00009, tenantmem_capture_changes, is dropped here: a later migration
-- that adds a data table creates its capture function under a name unique to the schema (suffix
-- '_' || the schema's oid), with the three tenantmem_capture_* triggers, or defines the generator
-- again and drops it before it ends (TestTenantFunctionNamesAreUnique checks the names).
-- +goose StatementBegin
DO $$
DECLARE
    sch text := current_schema();
    sfx text := '_' || to_regnamespace(current_schema())::oid;
    impact text := 'chunk_term_impact' || sfx;
    t text;
BEGIN
    EXECUTE format('ALTER FUNCTION %I.chunk_term_impact(integer, integer) RENAME TO %I', sch, impact);
    EXECUTE format($f$
        CREATE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql SET search_path = %I, pg_catalog, pg_temp AS $body$
        BEGIN
            INSERT INTO chunk_terms (owner_id, term, impact, chunk_id, tf, dl)
            SELECT n.owner_id, t.lexeme, %I(greatest(cardinality(t.positions), 1), l.dl), n.chunk_id,
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
        $body$ $f$, sch, 'chunk_terms_insert' || sfx, sch, impact);
    -- The body of migration 00011 (postings found by their whole key).
    EXECUTE format($f$
        CREATE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql SET search_path = %I, pg_catalog, pg_temp AS $body$
        BEGIN
            WITH d AS MATERIALIZED (
                SELECT o.owner_id, t.lexeme AS term, %I(greatest(cardinality(t.positions), 1), l.dl) AS impact, o.chunk_id
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
        $body$ $f$, sch, 'chunk_terms_delete' || sfx, sch, impact);
    -- CREATE OR REPLACE, not DROP and CREATE: it takes the lock of CREATE TRIGGER, which lets the
    -- table's readers go on (DROP TRIGGER's exclusive lock would queue every search of the shared
    -- tier behind the longest reader).
    EXECUTE format('CREATE OR REPLACE TRIGGER chunk_terms_insert AFTER INSERT ON %I.chunks
        REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION %I.%I()', sch, sch, 'chunk_terms_insert' || sfx);
    EXECUTE format('CREATE OR REPLACE TRIGGER chunk_terms_delete AFTER DELETE ON %I.chunks
        REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION %I.%I()', sch, sch, 'chunk_terms_delete' || sfx);
    EXECUTE format('DROP FUNCTION %I.chunk_terms_insert()', sch);
    EXECUTE format('DROP FUNCTION %I.chunk_terms_delete()', sch);

    -- The capture functions keep their oids (the triggers point at them): a rename is enough.
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'embedding_jobs', 'search_history', 'tenant_usage', 'idempotency_keys'] LOOP
        IF to_regclass(format('%I.%I', sch, t)) IS NOT NULL THEN
            EXECUTE format('ALTER FUNCTION %I.%I() RENAME TO %I', sch, 'tenantmem_capture_' || t, 'tenantmem_capture_' || t || sfx);
        END IF;
    END LOOP;
    -- Gone already when this runs again after its Down.
    EXECUTE format('DROP FUNCTION IF EXISTS %I.tenantmem_capture_changes(text, boolean)', sch);
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The names of migrations 00006, 00009 and 00011 again, each function found through its trigger
-- (not through the oid in its name, which may not be the schema's any more). The generator is not
-- brought back: the Down of 00009 drops what it made table by table.
-- +goose StatementBegin
DO $$
DECLARE
    sch text := current_schema();
    t text;
    f oid;
    impact text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'embedding_jobs', 'search_history', 'tenant_usage', 'idempotency_keys'] LOOP
        SELECT g.tgfoid INTO f FROM pg_trigger g
        WHERE g.tgrelid = to_regclass(format('%I.%I', sch, t)) AND g.tgname = 'tenantmem_capture_insert';
        IF FOUND THEN
            EXECUTE format('ALTER FUNCTION %s RENAME TO %I', f::regprocedure, 'tenantmem_capture_' || t);
        END IF;
    END LOOP;
    SELECT p.proname INTO STRICT impact FROM pg_proc p
    WHERE p.pronamespace = to_regnamespace(sch) AND p.proname LIKE 'chunk\_term\_impact\_%';
    EXECUTE format('ALTER FUNCTION %I.%I(integer, integer) RENAME TO chunk_term_impact', sch, impact);
    FOREACH t IN ARRAY ARRAY['chunk_terms_insert', 'chunk_terms_delete'] LOOP
        SELECT g.tgfoid INTO STRICT f FROM pg_trigger g WHERE g.tgrelid = to_regclass(format('%I.chunks', sch)) AND g.tgname = t;
        EXECUTE format('ALTER FUNCTION %s RENAME TO %I', f::regprocedure, t);
        -- The body names the impact function: the same definition with its old name.
        EXECUTE replace(pg_get_functiondef(f), impact, 'chunk_term_impact');
    END LOOP;
END
$$;
-- +goose StatementEnd
