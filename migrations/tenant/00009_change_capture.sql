-- +goose Up
-- Issue 11: online moves. While a tenant is moved to another tier or placement, its rows are
-- copied from a snapshot, then the changes made since are applied to the copy, round after round,
-- then writes pause for a last, short round and the registry flips (docs/archive.md, "Moves").
-- The changes are found here: a statement-level trigger on every data table of the tenant logs
-- the primary key of each row a statement inserted, updated or deleted, but only for an owner
-- with a row in tenant_change_capture (one index lookup per statement for everyone else). With
-- writes_paused set, the same trigger refuses the statement (SQLSTATE TM503: the router answers
-- 503 with Retry-After), whoever writes: the router, its embedding worker or its history writer.
-- The tables a trigger of chunks fills (search postings and statistics) are not captured: a copy
-- rebuilds them.
CREATE TABLE tenant_change_capture (
    owner_id      text PRIMARY KEY CHECK (owner_id <> ''),
    writes_paused boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_change_log (
    owner_id   text NOT NULL CHECK (owner_id <> ''),
    change_id  bigint GENERATED ALWAYS AS IDENTITY,
    table_name text NOT NULL,
    -- The row's primary key without owner_id, each column as text.
    row_key    text[] NOT NULL,
    PRIMARY KEY (owner_id, change_id)
);

ALTER TABLE tenant_change_capture ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_change_capture FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON tenant_change_capture
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));
ALTER TABLE tenant_change_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_change_log FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_isolation ON tenant_change_log
    USING (owner_id = current_setting('tenantmem.owner_id', true))
    WITH CHECK (owner_id = current_setting('tenantmem.owner_id', true));

-- tenantmem_capture_changes(table, pauses) puts the capture triggers on a data table of this
-- schema: its primary key (without owner_id) is what the log records. With pauses false the
-- table's writes go on during the pause (they are logged, and a write after the last round is
-- lost with the old copy): search history, a side effect of reads, so that searches are served
-- throughout a move. A later migration that adds a data table calls it (and schema.TenantTables
-- lists the table).
-- +goose StatementBegin
CREATE FUNCTION tenantmem_capture_changes(tbl text, pauses boolean DEFAULT true) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    key_expr text;
    fn text := 'tenantmem_capture_' || tbl;
BEGIN
    SELECT 'ARRAY[' || coalesce(string_agg(format('r.%I::text', a.attname), ', ' ORDER BY k.ord), '') || ']::text[]'
    INTO key_expr
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = format('%I.%I', current_schema(), tbl)::regclass AND i.indisprimary AND a.attname <> 'owner_id';
    IF key_expr IS NULL THEN
        RAISE EXCEPTION 'table %.% has no primary key', current_schema(), tbl;
    END IF;
    -- One function per table, so each statement is planned once per session.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I() RETURNS trigger LANGUAGE plpgsql SET search_path = %I, pg_catalog, pg_temp AS $body$
        DECLARE
            paused boolean;
        BEGIN
            SELECT c.writes_paused INTO paused FROM tenant_change_capture c
            WHERE c.owner_id = current_setting('tenantmem.owner_id', true);
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
            IF paused AND %L THEN
                RAISE EXCEPTION 'writes of tenant %% are paused while it is moved; retry in a moment',
                    current_setting('tenantmem.owner_id', true) USING ERRCODE = 'TM503';
            END IF;
            IF TG_OP = 'INSERT' THEN
                INSERT INTO tenant_change_log (owner_id, table_name, row_key) SELECT r.owner_id, %L, %s FROM new_rows r;
            ELSIF TG_OP = 'UPDATE' THEN
                INSERT INTO tenant_change_log (owner_id, table_name, row_key) SELECT r.owner_id, %L, %s FROM new_rows r;
                INSERT INTO tenant_change_log (owner_id, table_name, row_key) SELECT r.owner_id, %L, %s FROM old_rows r;
            ELSE
                INSERT INTO tenant_change_log (owner_id, table_name, row_key) SELECT r.owner_id, %L, %s FROM old_rows r;
            END IF;
            RETURN NULL;
        END
        $body$ $f$, fn, current_schema(), pauses, tbl, key_expr, tbl, key_expr, tbl, key_expr, tbl, key_expr);
    EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_insert ON %I', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_update ON %I', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_delete ON %I', tbl);
    EXECUTE format('CREATE TRIGGER tenantmem_capture_insert AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION %I()', tbl, fn);
    EXECUTE format('CREATE TRIGGER tenantmem_capture_update AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION %I()', tbl, fn);
    EXECUTE format('CREATE TRIGGER tenantmem_capture_delete AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION %I()', tbl, fn);
END
$fn$;
-- +goose StatementEnd

-- The data tables that exist at this version (schema.TenantTables, kind TableData).
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'embedding_jobs', 'search_history', 'tenant_usage', 'idempotency_keys'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), t)) IS NOT NULL THEN
            PERFORM tenantmem_capture_changes(t, t <> 'search_history');
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunks', 'embedding_jobs', 'search_history', 'tenant_usage', 'idempotency_keys'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), t)) IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_insert ON %I', t);
            EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_update ON %I', t);
            EXECUTE format('DROP TRIGGER IF EXISTS tenantmem_capture_delete ON %I', t);
            EXECUTE format('DROP FUNCTION IF EXISTS %I()', 'tenantmem_capture_' || t);
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP FUNCTION IF EXISTS tenantmem_capture_changes(text, boolean); -- gone after 00012
DROP TABLE tenant_change_log;
DROP TABLE tenant_change_capture;
