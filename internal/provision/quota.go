package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// SettingLimits is the manifest setting that carries the tenant's limit overrides
// (registry.TenantLimits); a restore applies them to the restored tenant.
const SettingLimits = "limits"

// quotaOf is the storage quota of a tenant with overrides o: the deployment's defaults
// (Config.Quota) with o applied.
func (p *Provisioner) quotaOf(o registry.TenantLimits) memory.Quota {
	l := defaultQuota(p.cfg.Quota).With(o)
	return memory.Quota{Documents: l.MaxDocuments, Chunks: l.MaxChunks, ContentBytes: l.MaxContentBytes}
}

// limitsOf returns the limit overrides an archive carries (zero when it carries none).
func limitsOf(m archive.Manifest) (registry.TenantLimits, error) {
	var l registry.TenantLimits
	raw, ok := m.Settings[SettingLimits]
	if !ok {
		return l, nil
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return l, fmt.Errorf("%w: setting %s: %s", archive.ErrCorrupt, SettingLimits, err.Error())
	}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%w: setting %s: %s", archive.ErrCorrupt, SettingLimits, err.Error())
	}
	return l, nil
}

// checkQuota refuses totals (documents, chunks, content bytes) that exceed q, naming the first
// quota they exceed: a *memory.QuotaError (HTTP 413) whose Stored is what the tenant held before
// (held) and Adding what the load brings.
func checkQuota(q memory.Quota, held, adding [3]int64) error {
	for i, c := range []struct {
		field string
		limit int64
	}{{"documents", q.Documents}, {"chunks", q.Chunks}, {"content_bytes", q.ContentBytes}} {
		if c.limit > 0 && adding[i] > 0 && held[i]+adding[i] > c.limit {
			return &memory.QuotaError{Field: c.field, Limit: c.limit, Stored: held[i], Adding: adding[i]}
		}
	}
	return nil
}

// manifestUsage is what an archive's rows add to a tenant, as far as the manifest says before
// the rows are read: documents and chunks (content bytes are known once loaded).
func manifestUsage(m archive.Manifest) [3]int64 {
	var u [3]int64
	if t, ok := m.Table("documents"); ok {
		u[0] = t.Rows
	}
	if t, ok := m.Table("chunks"); ok {
		u[1] = t.Rows
	}
	return u
}

// loadedUsage reads the usage row a load wrote for the tenant at tgt (tenant_usage, carried by
// the archive), or counts the rows when the archive predates it.
func loadedUsage(ctx context.Context, tgt archive.Target) ([3]int64, error) {
	var u [3]int64
	err := pgx.BeginTxFunc(ctx, tgt.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tgt.Scope(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT documents, chunks, content_bytes FROM tenant_usage WHERE owner_id = $1`, tgt.OwnerID).
			Scan(&u[0], &u[1], &u[2])
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM documents WHERE owner_id = $1),
			(SELECT count(*) FROM chunks WHERE owner_id = $1),
			(SELECT coalesce(sum(content_bytes), 0) FROM documents WHERE owner_id = $1)`, tgt.OwnerID).Scan(&u[0], &u[1], &u[2])
	})
	if err != nil {
		return u, fmt.Errorf("read loaded usage: %w", err)
	}
	return u, nil
}

// defaultQuota fills the zero storage quotas of l with limit's defaults and turns
// limit.Unlimited into 0 (no quota), as the router does with its flags.
func defaultQuota(l limit.Limits) limit.Limits {
	return limit.Config{Defaults: l}.WithDefaults().Defaults
}

// checkLoadedQuota checks what a restore loaded for tenant id at loc against its quota.
func (p *Provisioner) checkLoadedQuota(ctx context.Context, loc registry.Location, id string, q memory.Quota) error {
	pool, release, err := p.poolFor(ctx, loc)
	if err != nil {
		return err
	}
	defer release()
	u, err := loadedUsage(ctx, archive.Target{Pool: pool, Role: p.cfg.OwnerRole, Schema: loc.Schema, OwnerID: id})
	if err != nil {
		return err
	}
	return checkQuota(q, [3]int64{}, u)
}
