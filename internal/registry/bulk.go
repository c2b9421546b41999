package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// InsertActive adds tenants of one tier in status active, at migration version version, with
// one statement. Ids that exist already, in any status, are skipped: it returns the tenants it
// inserted, in no particular order.
func InsertActive(ctx context.Context, db DBTX, tier Tier, schemaName string, ids []string, version int64) ([]Tenant, error) {
	rows, err := db.Query(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status, migration_version)
		SELECT id, $2, $3, 'active', $4 FROM unnest($1::text[]) AS id
		ON CONFLICT (tenant_id) DO NOTHING
		RETURNING `+tenantColumns, ids, string(tier), schemaName, version)
	if err != nil {
		return nil, fmt.Errorf("registry: insert tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("registry: insert tenants: %w", err)
	}
	return ts, nil
}

// IssueKeys creates one key for each tenant, with one statement, and returns them in clear (once),
// in the order of tenantIDs.
func IssueKeys(ctx context.Context, db DBTX, tenantIDs []string) ([]IssuedKey, error) {
	keys := make([]IssuedKey, len(tenantIDs))
	keyIDs := make([]string, len(tenantIDs))
	hashes := make([][]byte, len(tenantIDs))
	for i, id := range tenantIDs {
		var s [32]byte
		_, _ = rand.Read(s[:])
		secret := hex.EncodeToString(s[:])
		keys[i] = IssuedKey{APIKey: APIKey{KeyID: newKeyID(), TenantID: id}}
		keys[i].Key = keyPrefix + keys[i].KeyID + "_" + secret
		keyIDs[i], hashes[i] = keys[i].KeyID, HashSecret(secret)
	}
	rows, err := db.Query(ctx, `INSERT INTO tenantmem_control.api_keys (key_id, tenant_id, secret_hash)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) RETURNING key_id, created_at`, keyIDs, tenantIDs, hashes)
	if err != nil {
		return nil, fmt.Errorf("registry: issue keys: %w", err)
	}
	created := map[string]APIKey{}
	var k APIKey
	_, err = pgx.ForEachRow(rows, []any{&k.KeyID, &k.CreatedAt}, func() error {
		created[k.KeyID] = k
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: issue keys: %w", err)
	}
	for i := range keys {
		keys[i].CreatedAt = created[keys[i].KeyID].CreatedAt
	}
	return keys, nil
}

// AuditMany appends one event per tenant, details[i] for tenantIDs[i], with one statement.
func AuditMany(ctx context.Context, db DBTX, tenantIDs []string, event, actor string, details []map[string]any) error {
	if len(details) != len(tenantIDs) {
		return fmt.Errorf("registry: audit: %d details for %d tenants", len(details), len(tenantIDs))
	}
	if _, err := db.Exec(ctx, `INSERT INTO tenantmem_control.audit_log (tenant_id, event, actor, detail)
		SELECT t, $2, $3, d FROM unnest($1::text[], $4::jsonb[]) AS u(t, d)`, tenantIDs, event, actor, details); err != nil {
		return fmt.Errorf("registry: audit: %w", err)
	}
	return nil
}

// EverExisted returns those of ids that have an audit history: tenants that exist now or existed
// once and were deleted. One index probe per id.
func EverExisted(ctx context.Context, db DBTX, ids []string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT id FROM unnest($1::text[]) AS id
		WHERE EXISTS (SELECT 1 FROM tenantmem_control.audit_log a WHERE a.tenant_id = id)`, ids)
	if err != nil {
		return nil, fmt.Errorf("registry: audit history: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("registry: audit history: %w", err)
	}
	return out, nil
}

// GetMany returns the tenants of ids that exist, by id, with one statement.
func GetMany(ctx context.Context, db DBTX, ids []string) (map[string]Tenant, error) {
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM tenantmem_control.tenants WHERE tenant_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("registry: get tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("registry: get tenants: %w", err)
	}
	out := make(map[string]Tenant, len(ts))
	for _, t := range ts {
		out[t.ID] = t
	}
	return out, nil
}
