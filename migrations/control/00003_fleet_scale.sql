-- +goose Up
-- The version of each placement's shared schema whose router grants are in place, recorded by the
-- provisioner after it migrated that schema. `provisioner migrate` compares it with the schema's own version
-- and touches the shared schema only when they differ, so a run with nothing to do changes no
-- catalog row (a re-grant rewrites the tables' pg_class rows and invalidates every backend's cache).
ALTER TABLE placements ADD COLUMN shared_migration_version bigint NOT NULL DEFAULT 0;

-- Finding the tenants whose recorded migration version differs from the latest is two range
-- probes of this index (version < latest, version > latest), not a pass over every tenant: with a
-- million shared-tier tenants, `migrate` with nothing to do stays a few index probes.
CREATE INDEX tenants_tier_version_idx ON tenants (tier, migration_version);

-- +goose Down
DROP INDEX tenants_tier_version_idx;
ALTER TABLE placements DROP COLUMN shared_migration_version;
