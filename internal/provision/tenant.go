package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// TenantCreateParams describes a new tenant.
type TenantCreateParams struct {
	ID   string
	Tier registry.Tier
	// Placement names the server that will hold the tenant; empty applies the default policy
	// (registry.ChoosePlacement: the active placement taking the tier with the fewest tenants).
	Placement string
	// TextSearchConfig is the tenant's text search configuration, a configuration of
	// pg_catalog (english, simple for mixed languages, german, ...); empty means english. It is
	// fixed at creation: it decides how the tenant's chunks are indexed.
	TextSearchConfig string
}

// TenantCreateResult is a created tenant and its first API key, shown once.
type TenantCreateResult struct {
	Tenant registry.Tenant    `json:"tenant"`
	Key    registry.IssuedKey `json:"api_key"`
}

func validateCreate(p TenantCreateParams) error {
	if err := schema.ValidateTenantID(p.ID); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if _, err := registry.ParseTier(string(p.Tier)); err != nil {
		return err
	}
	if p.TextSearchConfig != "" && (!memory.ValidTextConfigName(p.TextSearchConfig) || p.TextSearchConfig[0] < 'a') {
		return &registry.FieldError{Field: "text_search_config", Message: "must be the name of a text search configuration, e.g. english or simple"}
	}
	if p.Placement != "" {
		return registry.ValidatePlacementName(p.Placement)
	}
	return nil
}

// names derives where a new tenant's rows will live inside its placement: the schema, and for the
// database tier the database.
func names(s registry.Settings, p TenantCreateParams) (schemaName, databaseName string, err error) {
	switch p.Tier {
	case registry.TierShared:
		return schema.SharedSchema, "", nil
	case registry.TierSchema:
		n, err := schema.Name(p.ID)
		return n, "", err
	default:
		n, err := schema.DatabaseName(s.DeploymentID, p.ID)
		return schema.DatabaseSchema, n, err
	}
}

// CreateTenant registers a tenant on a placement, creates and migrates the place of its rows (a
// schema, a database, or nothing for the shared tier), activates it and issues its first API key.
// A tenant is active only once its rows' place exists and is migrated.
//
// It is idempotent and crash-safe: if a previous call stopped half-way (status provisioning), this
// call finishes that job on the placement recorded then; if the tenant is already active,
// suspended or being deleted it returns registry.ErrExists. Two concurrent calls for one id
// serialise on the tenant's advisory lock: one creates, the other gets ErrExists. Invalid input
// returns a *registry.FieldError and writes nothing; so does a new tenant whose placement cannot
// be reached (placement.ErrUnavailable), or that no placement takes (registry.ErrConflict).
func (p *Provisioner) CreateTenant(ctx context.Context, params TenantCreateParams) (TenantCreateResult, error) {
	if err := validateCreate(params); err != nil {
		return TenantCreateResult{}, err
	}
	_, settings, err := p.ready(ctx)
	if err != nil {
		return TenantCreateResult{}, err
	}
	schemaName, databaseName, err := names(settings, params)
	if err != nil {
		return TenantCreateResult{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if err := p.checkTextConfig(ctx, params.TextSearchConfig); err != nil {
		return TenantCreateResult{}, err
	}
	var res TenantCreateResult
	err = p.withTenantLock(ctx, params.ID, func(ctx context.Context, conn *pgxpool.Conn) error {
		existing, err := registry.Get(ctx, conn, params.ID)
		switch {
		case err == nil && existing.Status == registry.StatusProvisioning && existing.Tier == params.Tier &&
			(params.Placement == "" || params.Placement == existing.PlacementID):
		case err == nil:
			return fmt.Errorf("tenant %q (%s, %s, on %s): %w", params.ID, existing.Tier, existing.Status,
				existing.PlacementID, registry.ErrExists)
		case !errors.Is(err, registry.ErrNotFound):
			return err
		}
		target := existing.PlacementID
		if target == "" {
			// A new tenant: pick its placement and make sure it answers before anything is written.
			if target, err = p.pickPlacement(ctx, conn, params); err != nil {
				return err
			}
		}
		var t registry.Tenant
		err = p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			cur, err := registry.GetForUpdate(ctx, tx, params.ID)
			switch {
			case err == nil && cur.Status == registry.StatusProvisioning && cur.Tier == params.Tier:
				t = cur // resume
				return registry.Audit(ctx, tx, params.ID, "create_resumed", p.cfg.Actor, nil)
			case err == nil:
				return fmt.Errorf("tenant %q (%s, %s): %w", params.ID, cur.Tier, cur.Status, registry.ErrExists)
			case !errors.Is(err, registry.ErrNotFound):
				return err
			}
			if err := p.admit(ctx, tx, target, params.Tier); err != nil {
				return err
			}
			t, err = registry.Insert(ctx, tx, registry.TenantInsertParams{
				ID: params.ID, Tier: params.Tier, SchemaName: schemaName, DatabaseName: databaseName, PlacementID: target,
				TextSearchConfig: params.TextSearchConfig,
			})
			if err != nil {
				return err
			}
			detail := map[string]any{"tier": params.Tier, "schema": schemaName, "placement": target}
			if databaseName != "" {
				detail["database"] = databaseName
			}
			return registry.Audit(ctx, tx, params.ID, "create_started", p.cfg.Actor, detail)
		})
		if err != nil {
			return err
		}
		if err := p.hook(ctx, StepCreateRegistered, t.ID); err != nil {
			return err
		}
		version, err := p.createLocation(ctx, conn, t)
		if err != nil {
			return err
		}
		if err := p.hook(ctx, StepCreateMigrated, t.ID); err != nil {
			return err
		}

		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if err := registry.SetMigrationVersion(ctx, tx, t.ID, version); err != nil {
				return err
			}
			t, err = registry.SetStatus(ctx, tx, t.ID, registry.StatusActive)
			if err != nil {
				return err
			}
			key, err := registry.IssueKey(ctx, tx, t.ID)
			if err != nil {
				return err
			}
			if err := registry.Audit(ctx, tx, t.ID, "created", p.cfg.Actor,
				map[string]any{"migration_version": version, "key_id": key.KeyID}); err != nil {
				return err
			}
			if err := registry.Notify(ctx, tx, registry.Notification{TenantID: t.ID, Event: "created"}); err != nil {
				return err
			}
			res = TenantCreateResult{Tenant: t, Key: key}
			return nil
		})
	})
	if err != nil {
		return TenantCreateResult{}, wrap("create tenant", err)
	}
	p.cfg.Logger.InfoContext(ctx, "tenant created", "tenant_id", res.Tenant.ID, "tier", string(res.Tenant.Tier),
		"placement", res.Tenant.PlacementID, "schema", res.Tenant.SchemaName, "database", res.Tenant.DatabaseName)
	return res, nil
}

// checkTextConfig refuses a text search configuration that pg_catalog does not have.
func (p *Provisioner) checkTextConfig(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	var ok bool
	if err := p.cfg.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_ts_config
		WHERE cfgname = $1 AND cfgnamespace = 'pg_catalog'::regnamespace)`, name).Scan(&ok); err != nil {
		return fmt.Errorf("check text search configuration: %w", err)
	}
	if !ok {
		return &registry.FieldError{Field: "text_search_config",
			Message: fmt.Sprintf("unknown text search configuration %q; see pg_ts_config (english, simple, german, ...)", name)}
	}
	return nil
}

// pickPlacement returns the placement a new tenant goes to (the one asked for, or the default
// policy's choice) after checking that it takes the tier and that its main database answers.
func (p *Provisioner) pickPlacement(ctx context.Context, conn registry.DBTX, params TenantCreateParams) (string, error) {
	var (
		pl  registry.Placement
		err error
	)
	if params.Placement == "" {
		pl, err = registry.ChoosePlacement(ctx, conn, params.Tier)
		if errors.Is(err, registry.ErrNotFound) {
			return "", fmt.Errorf("no active placement takes new %s-tier tenants (all draining, disabled, full or not taking the tier): %w",
				params.Tier, registry.ErrNoPlacement)
		}
	} else {
		pl, err = registry.GetPlacement(ctx, conn, params.Placement)
		if errors.Is(err, registry.ErrNotFound) {
			return "", &registry.FieldError{Field: "placement", Message: fmt.Sprintf("unknown placement %q", params.Placement)}
		}
	}
	if err != nil {
		return "", err
	}
	if err := admissible(pl, params.Tier); err != nil {
		return "", err
	}
	key := registry.DatabaseKey{Placement: pl.Name}
	if !key.IsControl() {
		pool, release, err := p.pools.Acquire(ctx, key)
		if err != nil {
			return "", err
		}
		defer release()
		if err := pool.Ping(ctx); err != nil {
			return "", fmt.Errorf("placement %q does not answer: %w: %w", pl.Name, placement.ErrUnavailable, err)
		}
	}
	return pl.Name, nil
}

// admit locks the placement for the registration (shared, or exclusive when it has a capacity
// hint so that concurrent creates cannot overshoot it) and checks again that it takes the tenant.
func (p *Provisioner) admit(ctx context.Context, tx pgx.Tx, name string, tier registry.Tier) error {
	pl, err := registry.GetPlacement(ctx, tx, name)
	if err == nil {
		pl, err = registry.LockPlacement(ctx, tx, name, pl.MaxTenants > 0)
	}
	if errors.Is(err, registry.ErrNotFound) {
		return &registry.FieldError{Field: "placement", Message: fmt.Sprintf("unknown placement %q", name)}
	}
	if err != nil {
		return err
	}
	return admissible(pl, tier)
}

// admissible says whether a placement takes a new tenant of a tier.
func admissible(pl registry.Placement, tier registry.Tier) error {
	switch {
	case !pl.Takes(tier):
		return &registry.FieldError{Field: "tier", Message: fmt.Sprintf("placement %q does not take the %s tier (it takes %s)",
			pl.Name, tier, joinTiers(pl.Tiers))}
	case pl.State != registry.PlacementActive:
		return fmt.Errorf("placement %q is %s and takes no new tenants: %w", pl.Name, pl.State, registry.ErrNoPlacement)
	case pl.Full():
		return fmt.Errorf("placement %q is full (%d of %d tenants): %w", pl.Name, pl.Tenants, pl.MaxTenants, registry.ErrNoPlacement)
	}
	return nil
}

func joinTiers(ts []registry.Tier) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return strings.Join(out, ", ")
}

// GetTenant returns one registry entry.
func (p *Provisioner) GetTenant(ctx context.Context, tenantID string) (registry.Tenant, error) {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return registry.Tenant{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	t, err := registry.Get(ctx, p.pool, tenantID)
	if err != nil {
		return registry.Tenant{}, wrap("get tenant", err)
	}
	return t, nil
}

// ListTenants returns a page of registry entries in tenant id order.
func (p *Provisioner) ListTenants(ctx context.Context, params registry.TenantListParams) ([]registry.Tenant, error) {
	ts, err := registry.List(ctx, p.pool, params)
	return ts, wrap("list tenants", err)
}

// SuspendTenant stops the router from serving a tenant (403) until ResumeTenant. Suspending a
// suspended tenant is a no-op; a tenant still provisioning or being deleted gives ErrConflict.
func (p *Provisioner) SuspendTenant(ctx context.Context, tenantID string) (registry.Tenant, error) {
	return p.setStatus(ctx, tenantID, registry.StatusActive, registry.StatusSuspended, "suspended")
}

// ResumeTenant makes a suspended tenant active again. Resuming an active tenant is a no-op.
func (p *Provisioner) ResumeTenant(ctx context.Context, tenantID string) (registry.Tenant, error) {
	return p.setStatus(ctx, tenantID, registry.StatusSuspended, registry.StatusActive, "resumed")
}

func (p *Provisioner) setStatus(ctx context.Context, tenantID string, from, to registry.Status, event string) (registry.Tenant, error) {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return registry.Tenant{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	var t registry.Tenant
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		cur, err := registry.GetForUpdate(ctx, tx, tenantID)
		if err != nil {
			return err
		}
		switch cur.Status {
		case to:
			t = cur
			return nil
		case from:
		default:
			return fmt.Errorf("tenant %q is %s: %w", tenantID, cur.Status, registry.ErrConflict)
		}
		if t, err = registry.SetStatus(ctx, tx, tenantID, to); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, tenantID, event, p.cfg.Actor, nil); err != nil {
			return err
		}
		return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: event})
	})
	if err != nil {
		return registry.Tenant{}, wrap(event, err)
	}
	return t, nil
}

// DeleteTenant deletes a tenant and all its data: its schema (schema tier) or its rows in the shared
// schema (shared tier), then its registry entry and keys. It first marks the tenant deleting (the
// router stops serving it at once), so a crash half-way leaves a tenant that no key can reach and
// that the next DeleteTenant finishes. The audit log keeps the history.
func (p *Provisioner) DeleteTenant(ctx context.Context, tenantID string) error {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	err := p.withTenantLock(ctx, tenantID, func(ctx context.Context, conn *pgxpool.Conn) error {
		var t registry.Tenant
		err := p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			var err error
			if t, err = registry.GetForUpdate(ctx, tx, tenantID); err != nil {
				return err
			}
			if t.Status == registry.StatusDeleting {
				return registry.Audit(ctx, tx, tenantID, "delete_resumed", p.cfg.Actor, nil)
			}
			if _, err := registry.SetStatus(ctx, tx, tenantID, registry.StatusDeleting); err != nil {
				return err
			}
			if err := registry.Audit(ctx, tx, tenantID, "delete_started", p.cfg.Actor, nil); err != nil {
				return err
			}
			return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: "deleting"})
		})
		if err != nil {
			return err
		}
		if err := p.hook(ctx, StepDeleteMarked, tenantID); err != nil {
			return err
		}
		if err := p.dropData(ctx, conn, t); err != nil {
			return err
		}
		// A move or restore in progress has a copy elsewhere too: it goes with the tenant.
		if err := p.dropJobCopies(ctx, conn, t); err != nil {
			return err
		}
		if err := p.hook(ctx, StepDeleteDropped, tenantID); err != nil {
			return err
		}
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if err := registry.DeleteJob(ctx, tx, tenantID); err != nil {
				return err
			}
			if err := registry.Delete(ctx, tx, tenantID); err != nil {
				return err
			}
			if err := registry.Audit(ctx, tx, tenantID, "deleted", p.cfg.Actor,
				map[string]any{"tier": t.Tier, "schema": t.SchemaName, "placement": t.PlacementID, "database": t.DatabaseName}); err != nil {
				return err
			}
			return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: "deleted"})
		})
	})
	if err != nil {
		return wrap("delete tenant", err)
	}
	p.cfg.Logger.InfoContext(ctx, "tenant deleted", "tenant_id", tenantID)
	return nil
}

// deleteWork removes the tenant's row from the list of tenants with embedding work, if any; its
// jobs went with its data.
func deleteWork(ctx context.Context, tx pgx.Tx, t registry.Tenant) error {
	// A deployment not migrated since the placement schema came has no list yet.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, schema.PlacementSchema+".embedding_work").Scan(&exists); err != nil || !exists {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM `+ident(schema.PlacementSchema)+`.embedding_work WHERE schema_name = $1 AND owner_id = $2`,
		t.SchemaName, t.ID)
	if err != nil {
		return fmt.Errorf("delete embedding work: %w", err)
	}
	return nil
}

// IssueKey issues another API key, with no delegation scope, for an active or suspended tenant.
func (p *Provisioner) IssueKey(ctx context.Context, tenantID string) (registry.IssuedKey, error) {
	return p.IssueKeyWith(ctx, registry.KeyIssueParams{TenantID: tenantID})
}

// IssueKeyWith issues another API key for an active or suspended tenant, with the scopes of
// params (delegate, create_descendants; see registry.APIKey). The audit log records the scopes.
func (p *Provisioner) IssueKeyWith(ctx context.Context, params registry.KeyIssueParams) (registry.IssuedKey, error) {
	tenantID := params.TenantID
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return registry.IssuedKey{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if err := params.Validate(); err != nil {
		return registry.IssuedKey{}, err
	}
	var k registry.IssuedKey
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		t, err := registry.GetForUpdate(ctx, tx, tenantID)
		if err != nil {
			return err
		}
		if t.Status != registry.StatusActive && t.Status != registry.StatusSuspended {
			return fmt.Errorf("tenant %q is %s: %w", tenantID, t.Status, registry.ErrConflict)
		}
		if k, err = registry.IssueKeyWith(ctx, tx, params); err != nil {
			return err
		}
		return registry.Audit(ctx, tx, tenantID, "key_issued", p.cfg.Actor, map[string]any{"key_id": k.KeyID,
			"delegate": k.Delegate, "create_descendants": k.CreateDescendants})
	})
	return k, wrap("issue key", err)
}

// RevokeKey revokes one of a tenant's keys and announces it, so routers drop it from their caches.
func (p *Provisioner) RevokeKey(ctx context.Context, tenantID, keyID string) error {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		if err := registry.RevokeKey(ctx, tx, tenantID, keyID); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, tenantID, "key_revoked", p.cfg.Actor, map[string]any{"key_id": keyID}); err != nil {
			return err
		}
		return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: "key_revoked", KeyID: keyID})
	})
	return wrap("revoke key", err)
}

// ListKeys lists a tenant's keys without secrets.
func (p *Provisioner) ListKeys(ctx context.Context, tenantID string) ([]registry.APIKey, error) {
	if _, err := p.GetTenant(ctx, tenantID); err != nil {
		return nil, err
	}
	ks, err := registry.ListKeys(ctx, p.pool, tenantID)
	return ks, wrap("list keys", err)
}

// wrap adds a phrase to an error but keeps a *registry.FieldError bare, so callers print it as is.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var fe *registry.FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return fmt.Errorf("provision: %s: %w", what, err)
}

// dropJobCopies removes what a tenant's unfinished move or restore wrote besides its registered
// location: the other side of a move, a restore's target and staging schema.
func (p *Provisioner) dropJobCopies(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) error {
	job, err := registry.GetJob(ctx, p.pool, t.ID, false)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var d struct {
		From    registry.Location `json:"from"`
		To      registry.Location `json:"to"`
		Target  registry.Location `json:"target"`
		Staging string            `json:"staging"`
	}
	if err := json.Unmarshal(job.Detail, &d); err != nil {
		return fmt.Errorf("job of tenant %q: %w", t.ID, err)
	}
	for _, loc := range []registry.Location{d.From, d.To, d.Target} {
		if loc.Tier == "" || loc == t.Location() {
			continue
		}
		if err := p.dropData(ctx, conn, t.At(loc)); err != nil {
			return err
		}
	}
	return p.dropStaging(ctx, d.Staging)
}

// GetTenantLimits returns a tenant's limit overrides (all nil: the router's defaults apply).
func (p *Provisioner) GetTenantLimits(ctx context.Context, tenantID string) (registry.TenantLimits, error) {
	if _, err := p.GetTenant(ctx, tenantID); err != nil {
		return registry.TenantLimits{}, err
	}
	l, err := registry.GetLimits(ctx, p.pool, tenantID)
	return l, wrap("get limits", err)
}

// SetTenantLimits replaces a tenant's limit overrides (nil fields: the router's defaults; an
// all-nil value removes every override) and announces the change, so every router applies it to
// the tenant's next request. Invalid values give a *registry.FieldError and change nothing.
func (p *Provisioner) SetTenantLimits(ctx context.Context, tenantID string, l registry.TenantLimits) (registry.TenantLimits, error) {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return registry.TenantLimits{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if err := l.Validate(); err != nil {
		return registry.TenantLimits{}, err
	}
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		t, err := registry.GetForUpdate(ctx, tx, tenantID)
		if err != nil {
			return err
		}
		if t.Status == registry.StatusDeleting {
			return fmt.Errorf("tenant %q is %s: %w", tenantID, t.Status, registry.ErrConflict)
		}
		if err := registry.SetLimits(ctx, tx, tenantID, l); err != nil {
			return err
		}
		if err := registry.Audit(ctx, tx, tenantID, "limits_set", p.cfg.Actor, map[string]any{"limits": l}); err != nil {
			return err
		}
		return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: "limits_changed"})
	})
	if err != nil {
		return registry.TenantLimits{}, wrap("set limits", err)
	}
	return l, nil
}
