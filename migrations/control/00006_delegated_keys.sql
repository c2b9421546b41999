-- +goose Up
-- Delegated keys (issue 10). A key with delegate may act for any registered tenant strictly below
-- its own in the id hierarchy (acme -> acme/u-42), named in the router's Tenantmem-Act-As header.
-- A key with create_descendants may also have the router register a missing descendant in the
-- shared tier on first use. Both are fixed at issue time; existing keys have neither.
ALTER TABLE api_keys
    ADD COLUMN delegate boolean NOT NULL DEFAULT false,
    ADD COLUMN create_descendants boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT api_keys_create_descendants_check CHECK (delegate OR NOT create_descendants);

-- create_descendant is the router's only write to the registry: the router role has SELECT on the
-- registry and nothing else, and this function (owned by the owner role, SECURITY DEFINER, fixed
-- search_path, every name schema-qualified) registers exactly one shared-tier tenant on the
-- control server's placement ('local'), and only when
--   * the key exists, is not revoked, has create_descendants, and its tenant is active;
--   * p_tenant_id is a valid tenant id (the rules of schema.ValidateTenantID) strictly below the
--     key's tenant, segment-wise ('acme' never reaches 'acmex/...');
--   * the local placement is active, takes the shared tier and is not full.
-- It clears rows an earlier incarnation of the id may have left in the shared schema (as
-- provisioner create does), writes the audit log (on the new tenant and on the parent) and
-- announces the tenant on the registry channel. p_lock_id is registry.LockID(p_tenant_id): the
-- tenant's advisory lock, held by the provisioner while it creates or deletes the tenant.
-- It returns 'created', 'exists' (the id is registered, in any status), 'refused' (the key or
-- the id does not qualify) or 'no_placement'.
-- +goose StatementBegin
CREATE FUNCTION tenantmem_control.create_descendant(p_key_id text, p_tenant_id text, p_lock_id bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_parent   text;
    v_config   text;
    v_max      integer;
    v_ok       boolean;
    v_count    bigint;
    v_version  bigint;
    v_table    text;
BEGIN
    IF p_tenant_id IS NULL OR p_key_id IS NULL
       OR length(p_tenant_id) NOT BETWEEN 1 AND 255
       OR p_tenant_id !~ '^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$'
       OR p_tenant_id ~ '(^|/)\.\.?(/|$)' THEN
        RETURN 'refused';
    END IF;

    -- The key and its tenant; the parent row stays locked (FOR SHARE) until commit, so a
    -- concurrent suspend, delete or revoke of the parent orders before or after, never across.
    SELECT t.tenant_id, t.text_search_config INTO v_parent, v_config
    FROM tenantmem_control.api_keys k
    JOIN tenantmem_control.tenants t ON t.tenant_id = k.tenant_id
    WHERE k.key_id = p_key_id AND k.revoked_at IS NULL AND k.delegate AND k.create_descendants
      AND t.status = 'active'
    FOR SHARE OF k, t;
    IF v_parent IS NULL OR left(p_tenant_id, length(v_parent) + 1) <> v_parent || '/' THEN
        RETURN 'refused';
    END IF;

    PERFORM pg_advisory_xact_lock(p_lock_id);
    IF EXISTS (SELECT 1 FROM tenantmem_control.tenants WHERE tenant_id = p_tenant_id) THEN
        RETURN 'exists';
    END IF;

    SELECT p.state = 'active' AND 'shared' = ANY (p.tiers), p.max_tenants INTO v_ok, v_max
    FROM tenantmem_control.placements p WHERE p.placement_id = 'local' FOR SHARE;
    IF NOT coalesce(v_ok, false) THEN
        RETURN 'no_placement';
    END IF;
    IF v_max IS NOT NULL THEN
        PERFORM 1 FROM tenantmem_control.placements WHERE placement_id = 'local' FOR UPDATE;
        SELECT count(*) INTO v_count FROM tenantmem_control.tenants WHERE placement_id = 'local';
        IF v_count >= v_max THEN
            RETURN 'no_placement';
        END IF;
    END IF;

    IF to_regclass('tenantmem_shared.goose_db_version') IS NULL THEN
        RETURN 'no_placement';
    END IF;
    SELECT max(version_id) INTO v_version FROM tenantmem_shared.goose_db_version WHERE is_applied;

    -- Rows of an earlier incarnation of this id (see provision.makeLocation). Row-level security
    -- binds the owner role too, so scope the deletes to the tenant, transaction-locally.
    PERFORM set_config('tenantmem.owner_id', p_tenant_id, true);
    FOR v_table IN
        SELECT c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'owner_id' AND NOT a.attisdropped
        WHERE n.nspname = 'tenantmem_shared' AND c.relkind IN ('r', 'p')
        ORDER BY c.relname
    LOOP
        EXECUTE format('DELETE FROM tenantmem_shared.%I WHERE owner_id = $1', v_table) USING p_tenant_id;
    END LOOP;
    PERFORM set_config('tenantmem.owner_id', '', true);

    INSERT INTO tenantmem_control.tenants
        (tenant_id, tier, schema_name, placement_id, status, migration_version, text_search_config)
    VALUES (p_tenant_id, 'shared', 'tenantmem_shared', 'local', 'active', coalesce(v_version, 0), v_config);

    INSERT INTO tenantmem_control.audit_log (tenant_id, event, actor, detail) VALUES
        (p_tenant_id, 'created', 'router',
         jsonb_build_object('tier', 'shared', 'schema', 'tenantmem_shared', 'placement', 'local',
             'migration_version', coalesce(v_version, 0), 'on_first_use', true,
             'parent', v_parent, 'key_id', p_key_id)),
        (v_parent, 'descendant_created', 'router',
         jsonb_build_object('tenant_id', p_tenant_id, 'key_id', p_key_id, 'on_first_use', true));

    PERFORM pg_notify('tenantmem_registry', json_build_object('tenant_id', p_tenant_id, 'event', 'created')::text);
    RETURN 'created';
END
$fn$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION tenantmem_control.create_descendant(text, text, bigint) FROM PUBLIC;

-- The router role may call it. On a first init the settings row does not exist yet and init grants
-- it with the registry tables; on an upgrade (`provisioner migrate`) the grant is here.
-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    SELECT router_role INTO r FROM settings;
    IF r IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION tenantmem_control.create_descendant(text, text, bigint) TO %I', r);
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tenantmem_control.create_descendant(text, text, bigint);
ALTER TABLE api_keys
    DROP CONSTRAINT api_keys_create_descendants_check,
    DROP COLUMN create_descendants,
    DROP COLUMN delegate;
