package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// PlacementAddParams registers a placement.
type PlacementAddParams struct {
	Name     string
	Host     string
	Port     int
	Database string
	// MaxTenants is a capacity hint (0: none); Tiers the tiers it takes (default all three).
	MaxTenants  int
	Tiers       []registry.Tier
	Description string
	// RouterPassword, when set, becomes the router role's password on that server.
	RouterPassword string
}

func (a PlacementAddParams) insertParams() registry.PlacementInsertParams {
	return registry.PlacementInsertParams{Name: a.Name, Description: a.Description, Host: a.Host, Port: a.Port,
		Database: a.Database, MaxTenants: a.MaxTenants, Tiers: a.Tiers}
}

// placementAudit is the tenant id of placement events in the audit log (they concern no tenant).
const placementAudit = ""

// AddPlacement registers a PostgreSQL server as a placement after preparing it exactly as Init
// prepares the control server (prepareServer: roles, pgvector in the extensions schema, grants,
// the LEAKPROOF text match operator when the control database has it), and creating and migrating
// its shared schema. It connects as the provisioner's login for that placement (Config.Credentials
// or the passfile), which must be a superuser there. When the database tier is among its tiers,
// the login must also be able to create databases.
//
// It is idempotent: adding a placement again with the same endpoint prepares the server again and
// updates its hints (description, capacity, tiers); with another endpoint it is registry.ErrExists.
// A server that cannot be reached gives placement.ErrUnavailable, and nothing is registered.
func (p *Provisioner) AddPlacement(ctx context.Context, params PlacementAddParams) (registry.Placement, error) {
	ip := params.insertParams()
	if err := ip.Validate(); err != nil {
		return registry.Placement{}, err
	}
	if err := ValidateRouterPassword(params.RouterPassword); err != nil {
		return registry.Placement{}, err
	}
	_, settings, err := p.ready(ctx)
	if err != nil {
		return registry.Placement{}, err
	}
	existing, err := registry.GetPlacement(ctx, p.pool, params.Name)
	switch {
	case err == nil && (existing.Host != params.Host || existing.Port != params.Port || existing.Database != params.Database):
		return registry.Placement{}, fmt.Errorf("placement %q is registered at %s: %w", params.Name, endpoint(existing), registry.ErrExists)
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return registry.Placement{}, err
	}
	others, err := registry.ListPlacements(ctx, p.pool)
	if err != nil {
		return registry.Placement{}, err
	}
	for _, o := range others {
		if o.Name != params.Name && o.Host == params.Host && o.Port == params.Port && o.Database == params.Database {
			return registry.Placement{}, fmt.Errorf("placement %q already uses %s: %w", o.Name, endpoint(o), registry.ErrExists)
		}
	}

	candidate := registry.Placement{Name: params.Name, Host: params.Host, Port: params.Port, Database: params.Database}
	pc, err := p.pools.PoolConfigOf(candidate)
	if err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w: %w", params.Name, placement.ErrUnavailable, err)
	}
	pc.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w: %w", params.Name, placement.ErrUnavailable, err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: cannot connect to %s: %w: %w", params.Name,
			endpoint(candidate), placement.ErrUnavailable, err)
	}
	if err := p.checkNotControl(ctx, pool, params.Name); err != nil {
		return registry.Placement{}, err
	}
	if len(params.Tiers) == 0 || slices.Contains(params.Tiers, registry.TierDatabase) {
		var canCreate bool
		var user string
		if err := pool.QueryRow(ctx, `SELECT current_user, rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user`).
			Scan(&user, &canCreate); err != nil {
			return registry.Placement{}, fmt.Errorf("placement %q: %w", params.Name, err)
		}
		if !canCreate {
			return registry.Placement{}, &registry.FieldError{Field: "tiers", Message: fmt.Sprintf(
				"the provisioner's login %s on placement %q cannot create databases: grant it CREATEDB or leave out the database tier",
				user, params.Name)}
		}
	}
	leakproof, err := isLeakproof(ctx, p.pool)
	if err != nil {
		return registry.Placement{}, err
	}
	if err := p.prepareServer(ctx, pool, serverParams{routerPassword: params.RouterPassword, leakproofTextSearch: leakproof}); err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w", params.Name, err)
	}
	m, err := schema.NewMigrator(p.migrationLocks(schema.MigratorConfig{ConnConfig: pc.ConnConfig, Role: settings.OwnerRole,
		EmbeddingDimension: settings.EmbeddingDimension, Logger: p.cfg.Logger, TenantMigrations: p.cfg.TenantMigrations}))
	if err != nil {
		return registry.Placement{}, err
	}
	// Its embedding work queue, and its shared schema with the router's grants by default
	// privileges, exactly as init prepares the local placement.
	if _, err := p.migrateWorkQueue(ctx, pool, m); err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w", params.Name, err)
	}
	if err := p.ensureSchema(ctx, pool, schema.SharedSchema); err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w", params.Name, err)
	}
	sharedVersion, err := p.migrateSchema(ctx, m, schema.TenantSet, schema.SharedSchema, false)
	if err != nil {
		return registry.Placement{}, fmt.Errorf("placement %q: %w", params.Name, err)
	}

	var out registry.Placement
	err = p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		var err error
		event := "placement_added"
		if _, err = registry.LockPlacement(ctx, tx, params.Name, true); err == nil {
			event = "placement_updated"
			out, err = registry.UpdatePlacementHints(ctx, tx, ip)
		} else if errors.Is(err, registry.ErrNotFound) {
			out, err = registry.InsertPlacement(ctx, tx, ip)
		}
		if err != nil {
			return err
		}
		if err := registry.SetSharedMigrationVersion(ctx, tx, out.Name, sharedVersion); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, placementAudit, event, p.cfg.Actor, map[string]any{
			"placement": out.Name, "host": out.Host, "port": out.Port, "database": out.Database,
			"max_tenants": out.MaxTenants, "tiers": out.Tiers}); err != nil {
			return err
		}
		return registry.Notify(ctx, tx, registry.Notification{Placement: out.Name, Event: event})
	})
	if err != nil {
		return registry.Placement{}, wrap("add placement", err)
	}
	p.setSharedVersion(out.Name, sharedVersion)
	p.pools.Invalidate(out.Name)
	p.cfg.Logger.InfoContext(ctx, "placement added", "placement", out.Name, "endpoint", endpoint(out),
		"shared_version", sharedVersion)
	return out, nil
}

// checkNotControl refuses a placement whose database is the control database itself (it is the
// local placement already): same cluster (system identifier) and same database name. Where the
// login may not read the cluster's identifier the check is skipped.
func (p *Provisioner) checkNotControl(ctx context.Context, pool *pgxpool.Pool, name string) error {
	const q = `SELECT (SELECT system_identifier FROM pg_control_system()), current_database()`
	var (
		id1, id2 int64
		db1, db2 string
	)
	err1 := pool.QueryRow(ctx, q).Scan(&id1, &db1)
	err2 := p.pool.QueryRow(ctx, q).Scan(&id2, &db2)
	if err1 != nil || err2 != nil {
		p.cfg.Logger.DebugContext(ctx, "cannot compare the placement with the control database", "placement", name,
			"error", errors.Join(err1, err2).Error())
		return nil // the login may not read pg_control_system(): the check is a courtesy
	}
	if id1 == id2 && db1 == db2 {
		return &registry.FieldError{Field: "database", Message: fmt.Sprintf(
			"placement %q would be the control database itself, which is the local placement", name)}
	}
	return nil
}

func endpoint(p registry.Placement) string {
	if p.Name == registry.LocalPlacement {
		return "the control server"
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) + "/" + p.Database
}

// GetPlacement returns one placement with its tenant count.
func (p *Provisioner) GetPlacement(ctx context.Context, name string) (registry.Placement, error) {
	if err := registry.ValidatePlacementName(name); err != nil {
		return registry.Placement{}, err
	}
	pl, err := registry.GetPlacement(ctx, p.pool, name)
	return pl, wrap("get placement", err)
}

// ListPlacements returns every placement in name order, with tenant counts.
func (p *Provisioner) ListPlacements(ctx context.Context) ([]registry.Placement, error) {
	ps, err := registry.ListPlacements(ctx, p.pool)
	return ps, wrap("list placements", err)
}

// DrainPlacement stops a placement from taking new tenants; its tenants are still served.
func (p *Provisioner) DrainPlacement(ctx context.Context, name string) (registry.Placement, error) {
	return p.setPlacementState(ctx, name, registry.PlacementDraining)
}

// DisablePlacement stops serving a placement's tenants (the router answers 503 with Retry-After)
// and stops it from taking new ones; migrate skips it. Its tenants can still be deleted.
func (p *Provisioner) DisablePlacement(ctx context.Context, name string) (registry.Placement, error) {
	return p.setPlacementState(ctx, name, registry.PlacementDisabled)
}

// ActivatePlacement makes a draining or disabled placement active again. Run migrate after
// re-activating a placement that was disabled across a release.
func (p *Provisioner) ActivatePlacement(ctx context.Context, name string) (registry.Placement, error) {
	return p.setPlacementState(ctx, name, registry.PlacementActive)
}

func (p *Provisioner) setPlacementState(ctx context.Context, name string, state registry.PlacementState) (registry.Placement, error) {
	if err := registry.ValidatePlacementName(name); err != nil {
		return registry.Placement{}, err
	}
	var out registry.Placement
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		cur, err := registry.LockPlacement(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if cur.State == state {
			out = cur
			return nil
		}
		if err := registry.SetPlacementState(ctx, tx, name, state); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, placementAudit, "placement_"+string(state), p.cfg.Actor,
			map[string]any{"placement": name, "from": cur.State}); err != nil {
			return err
		}
		if err := registry.Notify(ctx, tx, registry.Notification{Placement: name, Event: "placement_" + string(state)}); err != nil {
			return err
		}
		out, err = registry.GetPlacement(ctx, tx, name)
		return err
	})
	if err != nil {
		return registry.Placement{}, wrap("set placement state", err)
	}
	p.pools.Invalidate(name)
	return out, nil
}

// RemovePlacement unregisters a placement that holds no tenant (registry.ErrConflict otherwise,
// and always for the local placement). The server itself is left as it is.
func (p *Provisioner) RemovePlacement(ctx context.Context, name string) error {
	if err := registry.ValidatePlacementName(name); err != nil {
		return err
	}
	if name == registry.LocalPlacement {
		return fmt.Errorf("placement local is the control server and cannot be removed: %w", registry.ErrConflict)
	}
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		cur, err := registry.LockPlacement(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if cur.Tenants > 0 {
			return fmt.Errorf("placement %q still holds %d tenants; delete them first: %w", name, cur.Tenants, registry.ErrConflict)
		}
		if err := registry.DeletePlacement(ctx, tx, name); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, placementAudit, "placement_removed", p.cfg.Actor,
			map[string]any{"placement": name, "host": cur.Host, "port": cur.Port, "database": cur.Database}); err != nil {
			return err
		}
		return registry.Notify(ctx, tx, registry.Notification{Placement: name, Event: "placement_removed"})
	})
	if err != nil {
		return wrap("remove placement", err)
	}
	p.pools.Invalidate(name)
	p.mu.Lock()
	delete(p.sharedVersions, name)
	p.mu.Unlock()
	return nil
}
