-- +goose Up
-- Placements: the PostgreSQL servers that hold tenants. 'local' is the control server itself (its
-- host, port and database stay NULL: the provisioner's and the router's own connection settings);
-- every other placement names its server and the database that holds its shared and schema tiers.
-- Credentials are never stored here: they come from each process's configuration.
ALTER TABLE placements
    ADD COLUMN database_name text CHECK (database_name ~ '^[A-Za-z_][A-Za-z0-9_$-]{0,62}$'),
    -- active: serves and takes new tenants; draining: serves, takes no new tenants; disabled:
    -- not served (the router answers 503) and takes no new tenants.
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'disabled')),
    -- Capacity hint: the default placement policy skips a full placement and an explicit one refuses.
    ADD COLUMN max_tenants integer CHECK (max_tenants > 0),
    -- The tiers this placement takes.
    ADD COLUMN tiers text[] NOT NULL DEFAULT '{shared,schema,database}'
        CHECK (cardinality(tiers) > 0 AND tiers <@ '{shared,schema,database}'),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT placements_host_check CHECK (host ~ '^(/[A-Za-z0-9._/-]{0,252}|[A-Za-z0-9][A-Za-z0-9.:_-]{0,252})$'),
    ADD CONSTRAINT placements_endpoint_check CHECK (
        (placement_id = 'local') = (host IS NULL) AND (host IS NULL) = (port IS NULL)
        AND (host IS NULL) = (database_name IS NULL));

-- The default placement policy counts tenants per placement and tier.
CREATE INDEX tenants_placement_idx ON tenants (placement_id, tier);

-- A random id of this deployment. Database-tier database names hash it with the tenant id, so two
-- deployments sharing a PostgreSQL server never derive the same database name.
ALTER TABLE settings ADD COLUMN deployment_id text NOT NULL
    DEFAULT replace(gen_random_uuid()::text, '-', '') CHECK (deployment_id ~ '^[a-z0-9]{8,64}$');

-- +goose Down
ALTER TABLE settings DROP COLUMN deployment_id;
DROP INDEX tenants_placement_idx;
ALTER TABLE placements
    DROP CONSTRAINT placements_endpoint_check,
    DROP CONSTRAINT placements_host_check,
    DROP COLUMN updated_at,
    DROP COLUMN tiers,
    DROP COLUMN max_tenants,
    DROP COLUMN state,
    DROP COLUMN database_name;
