package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// usageMigration is the tenant migration that created tenant_usage (00007).
const usageMigration = 7

// Usage is a tenant's stored totals: its tenant_usage row, kept by the memory engine in the
// transaction of every write. Reading it costs one index lookup, never a count of the tenant's
// rows.
type Usage struct {
	Documents    int64 `json:"documents"`
	Chunks       int64 `json:"chunks"`
	ContentBytes int64 `json:"content_bytes"`
	// UpdatedAt is the last write that changed the totals; zero when the tenant never wrote.
	UpdatedAt time.Time `json:"updated_at"`
}

// UsageOf returns the totals of the tenants that keep them in their placement's main database
// (shared and schema tiers), in one round trip per placement. A tenant is missing from the
// result when its rows are in a database of its own (database tier: see [Provisioner.TenantUsage]),
// when its schema predates tenant migration 7, or when its placement failed: errs holds that
// error by placement name. It is meant for a page of tenants (tens), not the fleet.
func (p *Provisioner) UsageOf(ctx context.Context, ts []registry.Tenant) (usage map[string]Usage, errs map[string]error) {
	byPlacement := map[string][]registry.Tenant{}
	for _, t := range ts {
		if t.Tier == registry.TierDatabase || t.MigrationVersion < usageMigration ||
			(t.Status != registry.StatusActive && t.Status != registry.StatusSuspended) {
			continue
		}
		loc := t.Location()
		byPlacement[loc.Placement] = append(byPlacement[loc.Placement], t)
	}
	usage, errs = map[string]Usage{}, map[string]error{}
	for name, group := range byPlacement {
		err := func() error {
			db, release, err := p.mainDB(ctx, nil, name)
			if err != nil {
				return err
			}
			defer release()
			return p.readUsage(ctx, db, group, usage)
		}()
		if err != nil {
			errs[name] = onPlacement(name, err)
		}
	}
	return usage, errs
}

// TenantUsage returns one tenant's totals, wherever its rows are (it connects to a database-tier
// tenant's database). It returns ErrNotFound for a tenant without them (still provisioning,
// being deleted, or a schema older than tenant migration 7).
func (p *Provisioner) TenantUsage(ctx context.Context, t registry.Tenant) (Usage, error) {
	if t.MigrationVersion < usageMigration || (t.Status != registry.StatusActive && t.Status != registry.StatusSuspended) {
		return Usage{}, fmt.Errorf("provision: tenant %q keeps no usage totals: %w", t.ID, registry.ErrNotFound)
	}
	got := map[string]Usage{}
	if t.Tier != registry.TierDatabase {
		u, errs := p.UsageOf(ctx, []registry.Tenant{t})
		if err := errs[t.Location().Placement]; err != nil {
			return Usage{}, err
		}
		return u[t.ID], nil
	}
	c, err := p.connectTenantDB(ctx, t.Location().Key())
	if err != nil {
		return Usage{}, onPlacement(t.PlacementID, err)
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	if err := p.readUsage(ctx, c, []registry.Tenant{t}, got); err != nil {
		return Usage{}, onPlacement(t.PlacementID, err)
	}
	return got[t.ID], nil
}

// readUsage reads the tenant_usage rows of ts, which all live in db, into usage: one batch in one
// transaction as the owner role, scoped to each tenant in turn exactly as the router scopes its
// requests (row-level security binds the owner too).
func (p *Provisioner) readUsage(ctx context.Context, db beginner, ts []registry.Tenant, usage map[string]Usage) error {
	return p.inTx(ctx, db, true, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, t := range ts {
			b.Queue(`SELECT set_config('tenantmem.owner_id', $1, true)`, t.ID)
			b.Queue(`SELECT documents, chunks, content_bytes, updated_at FROM `+ident(t.SchemaName)+
				`.tenant_usage WHERE owner_id = $1`, t.ID)
		}
		res := tx.SendBatch(ctx, b)
		for _, t := range ts {
			if _, err := res.Exec(); err != nil {
				_ = res.Close()
				return fmt.Errorf("usage of %q: %w", t.ID, err)
			}
			var u Usage
			err := res.QueryRow().Scan(&u.Documents, &u.Chunks, &u.ContentBytes, &u.UpdatedAt)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				_ = res.Close()
				return fmt.Errorf("usage of %q: %w", t.ID, err)
			}
			usage[t.ID] = u
		}
		return res.Close()
	})
}
