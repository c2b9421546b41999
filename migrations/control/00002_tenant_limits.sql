-- +goose Up
-- Per-tenant overrides of the router's limits (issue 9: fair sharing). A NULL column takes the
-- router's default (its flags); 0 means no limit for that tenant. The router reads a tenant's row
-- with its key (one query on a cache miss) and is told of changes by NOTIFY, like a suspension.
CREATE TABLE tenant_limits (
    tenant_id           text PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    requests_per_second double precision CHECK (requests_per_second >= 0 AND requests_per_second < 1e9),
    burst               integer CHECK (burst >= 0),
    max_concurrent      integer CHECK (max_concurrent >= 0),
    max_documents       bigint CHECK (max_documents >= 0),
    max_chunks          bigint CHECK (max_chunks >= 0),
    max_content_bytes   bigint CHECK (max_content_bytes >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The router role reads it. On a first init the settings row does not exist yet and init grants
-- it with the other registry tables; on an upgrade (`provisioner migrate`) the grant is here.
-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    SELECT router_role INTO r FROM settings;
    IF r IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('GRANT SELECT ON tenant_limits TO %I', r);
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE tenant_limits;
