-- +goose Up
-- The number of registry entries per placement, kept by triggers, so that creating a tenant reads
-- a few rows instead of counting every tenant of its placement. The default placement policy
-- (the placement with the fewest tenants) and the capacity hint read it on every create; counting
-- cost an index scan of every tenant of the placement, three times per create (a million
-- shared-tier tenants: three million index entries), so creation slowed as the fleet grew.
--
-- A striped counter: each change adds to the row of (placement, the backend's pid mod 16), and a
-- reader sums a placement's rows. One row per placement would be locked from a registration to
-- its commit, so concurrent creators (and bulk-creation batches) would commit one at a time; a
-- stripe may go negative (a tenant counted in one stripe and removed in another), the sum is exact.
-- A table of its own, apart from placements, whose row a create holds FOR SHARE.
CREATE TABLE placement_tenant_counts (
    placement_id text NOT NULL REFERENCES placements (placement_id) ON DELETE CASCADE,
    stripe       smallint NOT NULL CHECK (stripe BETWEEN 0 AND 15),
    tenants      bigint NOT NULL,
    PRIMARY KEY (placement_id, stripe)
);

-- Every stripe of every placement exists from the start (and from a placement's registration, by
-- the trigger below), so a change only ever updates a row: inserting a missing stripe would check
-- its foreign key against the placement's row, which a create holding that row FOR UPDATE (under
-- a capacity hint) blocks, while the create waits for the stripe: a deadlock.
-- The registry is locked against writes first (creates that run during `migrate` wait), so the
-- first count and the triggers see the same tenants.
LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO placement_tenant_counts (placement_id, stripe, tenants)
SELECT p.placement_id, s.stripe,
    CASE WHEN s.stripe = 0 THEN (SELECT count(*) FROM tenants t WHERE t.placement_id = p.placement_id) ELSE 0 END
FROM placements p CROSS JOIN generate_series(0, 15) AS s (stripe);

-- +goose StatementBegin
CREATE FUNCTION placement_tenant_counts_stripes() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO tenantmem_control.placement_tenant_counts (placement_id, stripe, tenants)
    SELECT NEW.placement_id, s, 0 FROM generate_series(0, 15) AS s;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER placement_tenant_counts_stripes AFTER INSERT ON placements
    FOR EACH ROW EXECUTE FUNCTION placement_tenant_counts_stripes();

-- The router role reads placements with their counts. On a first init the settings row does not
-- exist yet and init grants it with the other registry tables; on an upgrade the grant is here.
-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    SELECT router_role INTO r FROM settings;
    IF r IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('GRANT SELECT ON placement_tenant_counts TO %I', r);
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION placement_tenant_counts_add(placement text, delta bigint) RETURNS void LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenantmem_control.placement_tenant_counts AS c (placement_id, stripe, tenants)
    VALUES (placement, pg_backend_pid() % 16, delta)
    ON CONFLICT (placement_id, stripe) DO UPDATE SET tenants = c.tenants + excluded.tenants;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION placement_tenant_counts_changed() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Placements in a fixed order, so that two statements touching the same ones cannot deadlock.
    IF TG_OP = 'INSERT' THEN
        PERFORM tenantmem_control.placement_tenant_counts_add(placement_id, n)
        FROM (SELECT placement_id, count(*) AS n FROM new_tenants GROUP BY placement_id ORDER BY placement_id) x;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM tenantmem_control.placement_tenant_counts_add(placement_id, -n)
        FROM (SELECT placement_id, count(*) AS n FROM old_tenants GROUP BY placement_id ORDER BY placement_id) x;
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION placement_tenant_counts_moved() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A tenant moved to another placement: a row trigger, with a WHEN that costs nothing for the
    -- other updates of the registry (status, migration version), bulk ones included.
    IF OLD.placement_id < NEW.placement_id THEN
        PERFORM tenantmem_control.placement_tenant_counts_add(OLD.placement_id, -1);
        PERFORM tenantmem_control.placement_tenant_counts_add(NEW.placement_id, 1);
    ELSE
        PERFORM tenantmem_control.placement_tenant_counts_add(NEW.placement_id, 1);
        PERFORM tenantmem_control.placement_tenant_counts_add(OLD.placement_id, -1);
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER placement_tenant_counts_insert AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_tenants FOR EACH STATEMENT EXECUTE FUNCTION placement_tenant_counts_changed();
CREATE TRIGGER placement_tenant_counts_delete AFTER DELETE ON tenants
    REFERENCING OLD TABLE AS old_tenants FOR EACH STATEMENT EXECUTE FUNCTION placement_tenant_counts_changed();
CREATE TRIGGER placement_tenant_counts_update AFTER UPDATE OF placement_id ON tenants
    FOR EACH ROW WHEN (OLD.placement_id IS DISTINCT FROM NEW.placement_id) EXECUTE FUNCTION placement_tenant_counts_moved();

-- +goose Down
DROP TRIGGER placement_tenant_counts_update ON tenants;
DROP TRIGGER placement_tenant_counts_delete ON tenants;
DROP TRIGGER placement_tenant_counts_insert ON tenants;
DROP TRIGGER placement_tenant_counts_stripes ON placements;
DROP FUNCTION placement_tenant_counts_stripes();
DROP FUNCTION placement_tenant_counts_moved();
DROP FUNCTION placement_tenant_counts_changed();
DROP FUNCTION placement_tenant_counts_add(text, bigint);
DROP TABLE placement_tenant_counts;
