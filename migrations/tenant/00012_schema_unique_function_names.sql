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
    -- The trigger functions keep their oids (the triggers point at them, so no trigger changes and
    -- no table is locked); their bodies, which call the impact function by name, are replaced by
    -- the same definition naming it anew.
    FOREACH t IN ARRAY ARRAY['chunk_terms_insert', 'chunk_terms_delete'] LOOP
        EXECUTE format('ALTER FUNCTION %I.%I() RENAME TO %I', sch, t, t || sfx);
        EXECUTE replace(pg_get_functiondef(format('%I.%I()', sch, t || sfx)::regprocedure),
            'chunk_term_impact(', quote_ident(impact) || '(');
    END LOOP;

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
