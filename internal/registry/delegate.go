package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// IsStrictDescendant reports whether child is strictly below parent in the tenant id hierarchy:
// child starts with parent followed by "/" ("acme/u-42" is below "acme"; "acmex/u-1", "acme" and
// "ACME/u-1" are not). Both must already be valid tenant ids (schema.ValidateTenantID); the
// comparison is byte-wise, since tenant ids are case-sensitive.
func IsStrictDescendant(parent, child string) bool {
	return parent != "" && len(child) > len(parent)+1 && strings.HasPrefix(child, parent+"/")
}

// GetWithLimits returns one tenant and its limit overrides in one query, or ErrNotFound.
func GetWithLimits(ctx context.Context, db DBTX, tenantID string) (Tenant, TenantLimits, error) {
	var (
		t Tenant
		l TenantLimits
	)
	err := db.QueryRow(ctx, `SELECT t.tenant_id, t.tier, t.schema_name, coalesce(t.database_name, ''), t.placement_id,
			t.status, t.migration_version, t.text_search_config, t.created_at, t.updated_at,
			l.requests_per_second, l.burst, l.max_concurrent, l.max_documents, l.max_chunks, l.max_content_bytes
		FROM tenantmem_control.tenants t LEFT JOIN tenantmem_control.tenant_limits l USING (tenant_id)
		WHERE t.tenant_id = $1`, tenantID).Scan(&t.ID, &t.Tier, &t.SchemaName, &t.DatabaseName, &t.PlacementID,
		&t.Status, &t.MigrationVersion, &t.TextSearchConfig, &t.CreatedAt, &t.UpdatedAt,
		&l.RequestsPerSecond, &l.Burst, &l.MaxConcurrent, &l.MaxDocuments, &l.MaxChunks, &l.MaxContentBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, TenantLimits{}, ErrNotFound
	}
	if err != nil {
		return Tenant{}, TenantLimits{}, fmt.Errorf("registry: get tenant: %w", err)
	}
	return t, l, nil
}

// DescendantOutcome is what [CreateDescendant] did.
type DescendantOutcome string

// The outcomes of [CreateDescendant].
const (
	// DescendantCreated: the tenant was registered, active, in the shared tier.
	DescendantCreated DescendantOutcome = "created"
	// DescendantExists: the id was already registered (in any status); nothing changed.
	DescendantExists DescendantOutcome = "exists"
	// DescendantRefused: the key is unknown, revoked, lacks create_descendants or belongs to an
	// inactive tenant, or the id is invalid or not strictly below the key's tenant.
	DescendantRefused DescendantOutcome = "refused"
	// DescendantNoPlacement: the control server's placement takes no new shared-tier tenant.
	DescendantNoPlacement DescendantOutcome = "no_placement"
)

// CreateDescendant asks the registry to register tenantID in the shared tier on first use of the
// key keyID, through tenantmem_control.create_descendant (control migration 6): the only registry
// write the router role may make. The function re-checks every condition itself (key scope, parent
// active, id valid and strictly below), clears rows an earlier incarnation of the id left, writes
// the audit log and announces the tenant.
func CreateDescendant(ctx context.Context, db DBTX, keyID, tenantID string) (DescendantOutcome, error) {
	var out string
	if err := db.QueryRow(ctx, `SELECT tenantmem_control.create_descendant($1, $2, $3)`,
		keyID, tenantID, LockID(tenantID)).Scan(&out); err != nil {
		return "", fmt.Errorf("registry: create descendant: %w", err)
	}
	return DescendantOutcome(out), nil
}
