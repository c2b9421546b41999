package routing

import (
	"time"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// AddForTest caches a tenant handle and one key for it, as a successful Resolve would.
func (r *Resolver) AddForTest(keyID, tenantID, schema string, hash []byte) {
	now := time.Now()
	r.keys.Add(keyID, keyEntry{hash: hash, tenantID: tenantID, loadedAt: now})
	r.handles.Add(tenantID, &Handle{TenantID: tenantID, Tier: registry.TierSchema, Schema: schema,
		Location: registry.Location{Placement: registry.LocalPlacement, Schema: schema, OwnerID: tenantID},
		OwnerID:  tenantID, Status: registry.StatusActive, Pool: r.cfg.Pool, loadedAt: now})
}
