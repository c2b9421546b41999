-- +goose Up
-- Issue 11: restores and moves, resumable after a crash. A tenant has at most one job. The row
-- records where the job stands (phase) and what it needs to finish or undo itself (detail: the
-- archive it restores, the staging schema, the source and destination of a move), so a rerun
-- after a kill either finishes the job or rolls it back; the tenant is served from exactly one
-- place throughout (the registry row's location, which only the job's last step changes).
CREATE TABLE tenant_jobs (
    tenant_id  text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('restore', 'move')),
    phase      text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE tenant_jobs;
