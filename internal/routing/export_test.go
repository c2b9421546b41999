package routing

import (
	"time"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// AddForTest caches a tenant handle and one key for it, as a successful Resolve would.
func (r *Resolver) AddForTest(keyID, tenantID, schema string, hash []byte) {
	now := time.Now()
	r.mu.Lock()
	r.cacheKey(keyID, keyEntry{hash: hash, tenantID: tenantID, loadedAt: now})
	r.mu.Unlock()
	r.handles.Add(tenantID, &Handle{TenantID: tenantID, Tier: registry.TierSchema, Schema: schema,
		Location: registry.Location{Placement: registry.LocalPlacement, Schema: schema, OwnerID: tenantID},
		OwnerID:  tenantID, Status: registry.StatusActive, Pool: r.cfg.Pool, loadedAt: now})
}

// IndexedKeys counts the keys in the tenant index, for tests that check it stays exact.
func (r *Resolver) IndexedKeys() int {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	n := 0
	for _, ks := range r.byTenant {
		n += len(ks)
	}
	return n
}
