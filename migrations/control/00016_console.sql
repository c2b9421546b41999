-- +goose Up
-- Issue 10: the operator console.
--
-- The console searches tenants by id prefix with keyset paging. The primary key orders ids by the
-- database's collation, under which the ids that share a prefix need not be contiguous; in byte
-- order (COLLATE "C") they are, so a prefix is one index range: tenant_id >= prefix AND
-- tenant_id < the prefix's successor, read in index order and cut by LIMIT, at any fleet size.
CREATE INDEX tenants_id_bytes_idx ON tenants (tenant_id COLLATE "C");

-- Long-running operations (tenant migrations now; moves, backups and imports as they come) report
-- their progress here, so the console of any provisioner process shows those of every process
-- (`provisioner migrate` runs apart from `provisioner serve`). A running operation refreshes
-- updated_at every few seconds; one whose process died stays 'running' with an old updated_at,
-- which the console shows as stalled.
CREATE TABLE operations (
    operation_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_-]{0,31}$'),
    -- What it works on: a tenant id, a placement, "all tenants".
    subject      text NOT NULL DEFAULT '' CHECK (length(subject) <= 300),
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'succeeded', 'failed')),
    done         bigint NOT NULL DEFAULT 0 CHECK (done >= 0),
    total        bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    failed       bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    -- The unit of done and total: schemas, bytes, rows.
    unit         text NOT NULL DEFAULT '' CHECK (length(unit) <= 32),
    error        text NOT NULL DEFAULT '' CHECK (length(error) <= 2000),
    -- Who runs it: host and process id, for finding a stalled one.
    runner       text NOT NULL DEFAULT '' CHECK (length(runner) <= 200),
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CHECK ((state = 'running') = (finished_at IS NULL))
);
CREATE INDEX operations_running_idx ON operations (operation_id) WHERE state = 'running';

-- +goose Down
DROP TABLE operations;
DROP INDEX tenants_id_bytes_idx;
