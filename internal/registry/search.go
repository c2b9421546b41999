package registry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TenantSearchParams selects a page of tenants whose id starts with Prefix, in byte order of
// their ids.
type TenantSearchParams struct {
	// Prefix selects ids that start with it ("" selects all).
	Prefix string
	// After is the last tenant id of the previous page ("" for the first page).
	After string
	// Limit is the page size, 1 or more.
	Limit int
}

// searchTenantsSQL reads one range of tenants_id_bytes_idx: $1 lower bound (inclusive), $2 the
// previous page's last id (exclusive), $3 the prefix's successor (exclusive, NULL: none), $4 limit.
const searchTenantsSQL = `SELECT ` + tenantColumns + ` FROM tenantmem_control.tenants
	WHERE tenant_id COLLATE "C" >= $1 AND tenant_id COLLATE "C" > $2
		AND ($3::text IS NULL OR tenant_id COLLATE "C" < $3)
	ORDER BY tenant_id COLLATE "C" LIMIT $4`

// SearchTenants returns a page of tenants whose id starts with p.Prefix, ordered by id in byte
// order (COLLATE "C"). It reads one range of the index tenants_id_bytes_idx (control migration
// 16) and stops after Limit rows, so its cost does not grow with the number of tenants; there is
// no count.
func SearchTenants(ctx context.Context, db DBTX, p TenantSearchParams) ([]Tenant, error) {
	if p.Limit < 1 {
		return nil, &FieldError{Field: "limit", Message: "must be at least 1"}
	}
	lower := max(p.Prefix, p.After)
	var upper *string
	if s, ok := prefixSuccessor(p.Prefix); ok {
		upper = &s
	}
	// The lower bound is inclusive only for the prefix itself (a tenant may be named exactly it);
	// the after bound is exclusive.
	rows, err := db.Query(ctx, searchTenantsSQL, lower, p.After, upper, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("registry: search tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("registry: search tenants: %w", err)
	}
	return ts, nil
}

// prefixSuccessor is the least string above every string that starts with prefix, in byte order:
// the prefix with its last byte below 0xff incremented and what follows dropped. It reports false
// when there is none (an empty prefix, or one of 0xff bytes only); tenant ids are printable ASCII,
// so the result is valid text.
func prefixSuccessor(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// RecentAudit returns a tenant's newest events, newest first, at most limit (through the index
// audit_log_tenant_idx).
func RecentAudit(ctx context.Context, db DBTX, tenantID string, limit int) ([]AuditEvent, error) {
	rows, err := db.Query(ctx, `SELECT event_id, tenant_id, event, actor, detail, created_at
		FROM tenantmem_control.audit_log WHERE tenant_id = $1 ORDER BY event_id DESC LIMIT $2`, tenantID, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: audit log: %w", err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AuditEvent])
	if err != nil {
		return nil, fmt.Errorf("registry: audit log: %w", err)
	}
	return evs, nil
}
