-- +goose Up
-- Deployment-wide settings, written once by `provisioner init`.
CREATE TABLE settings (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    embedding_dimension integer NOT NULL CHECK (embedding_dimension BETWEEN 1 AND 16000),
    owner_role          text NOT NULL,
    router_role         text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Where database-tier tenants live. 'local' is the main server; other rows name another server.
CREATE TABLE placements (
    placement_id text PRIMARY KEY CHECK (placement_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description  text NOT NULL DEFAULT '',
    -- host and port of the server; NULL means the server of the control schema.
    host         text,
    port         integer CHECK (port BETWEEN 1 AND 65535),
    created_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO placements (placement_id, description) VALUES ('local', 'the server that holds the control schema');

CREATE TABLE tenants (
    tenant_id         text PRIMARY KEY CHECK (length(tenant_id) BETWEEN 1 AND 255),
    tier              text NOT NULL CHECK (tier IN ('shared', 'schema', 'database')),
    -- The schema that holds the tenant's rows: tenantmem_shared for the shared tier, tenant_<name>
    -- for the schema tier, and the schema inside the tenant's own database for the database tier.
    schema_name       text NOT NULL CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    database_name     text CHECK (database_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    placement_id      text NOT NULL DEFAULT 'local' REFERENCES placements,
    status            text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'deleting')),
    migration_version bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((tier = 'database') = (database_name IS NOT NULL))
);
-- A schema-tier schema belongs to exactly one tenant: this is the collision check of the mapping.
CREATE UNIQUE INDEX tenants_schema_name_key ON tenants (schema_name) WHERE tier = 'schema';
CREATE UNIQUE INDEX tenants_database_name_key ON tenants (placement_id, database_name) WHERE tier = 'database';
CREATE INDEX tenants_status_idx ON tenants (status);

-- API keys: the clear key is "tm_<key_id>_<secret>"; only sha256(secret) is stored. Lookup is by
-- key_id (the primary key), so verifying a key never scans.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[a-z0-9]{16}$'),
    tenant_id   text NOT NULL REFERENCES tenants ON DELETE CASCADE,
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Lifecycle events. No foreign key: the history of a deleted tenant stays.
CREATE TABLE audit_log (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL,
    event      text NOT NULL,
    actor      text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, event_id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE api_keys;
DROP TABLE tenants;
DROP TABLE placements;
DROP TABLE settings;
