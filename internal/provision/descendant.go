package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// MaxDescendantsPerCall bounds the tenant ids of one [Provisioner.CreateDescendants] call.
const MaxDescendantsPerCall = 1000

// DescendantsCreateParams names shared-tier tenants to create below a parent tenant.
type DescendantsCreateParams struct {
	// Parent is an active or suspended tenant.
	Parent string
	// IDs are the new tenants, each strictly below Parent ("acme/u-42" below "acme"); 1 to
	// MaxDescendantsPerCall of them, no duplicates.
	IDs []string
	// Placement names the server that will hold them; empty applies the default policy.
	Placement string
}

// DescendantsCreateResult says which ids were created and which were already registered (and
// left as they are).
type DescendantsCreateResult struct {
	Created  []string `json:"created"`
	Existing []string `json:"existing"`
}

func validateDescendants(p DescendantsCreateParams) error {
	if err := schema.ValidateTenantID(p.Parent); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if len(p.IDs) == 0 || len(p.IDs) > MaxDescendantsPerCall {
		return &registry.FieldError{Field: "tenant_ids", Message: fmt.Sprintf("give 1 to %d tenant ids", MaxDescendantsPerCall)}
	}
	seen := make(map[string]bool, len(p.IDs))
	for i, id := range p.IDs {
		field := fmt.Sprintf("tenant_ids[%d]", i)
		if err := schema.ValidateTenantID(id); err != nil {
			return &registry.FieldError{Field: field, Message: err.Error()}
		}
		if !registry.IsStrictDescendant(p.Parent, id) {
			return &registry.FieldError{Field: field, Message: fmt.Sprintf("%q is not below %q (want %s/...)", id, p.Parent, p.Parent)}
		}
		if seen[id] {
			return &registry.FieldError{Field: field, Message: fmt.Sprintf("%q is given twice", id)}
		}
		seen[id] = true
	}
	if p.Placement != "" {
		return registry.ValidatePlacementName(p.Placement)
	}
	return nil
}

// CreateDescendants registers shared-tier tenants below a parent tenant, cheaply and in bulk: no
// API key is issued (the parent's delegate keys act for them), and the whole batch takes three
// short transactions and one pass over the shared schema. Their text search configuration is the
// parent's. Ids already registered are reported as existing and left alone.
//
// It is resumable: the ids are registered as provisioning first, and a call that stopped
// half-way is finished by the next call with the same ids. Invalid input gives a
// *registry.FieldError naming the field and writes nothing; an unknown parent, or one being
// provisioned or deleted, gives registry.ErrNotFound or registry.ErrConflict.
func (p *Provisioner) CreateDescendants(ctx context.Context, params DescendantsCreateParams) (DescendantsCreateResult, error) {
	if err := validateDescendants(params); err != nil {
		return DescendantsCreateResult{}, err
	}
	if _, _, err := p.ready(ctx); err != nil {
		return DescendantsCreateResult{}, err
	}
	res, err := p.createDescendants(ctx, params)
	if err != nil {
		return DescendantsCreateResult{}, wrap("create descendants", err)
	}
	p.cfg.Logger.InfoContext(ctx, "descendants created", "parent", params.Parent,
		"created", len(res.Created), "existing", len(res.Existing))
	return res, nil
}

func (p *Provisioner) createDescendants(ctx context.Context, params DescendantsCreateParams) (DescendantsCreateResult, error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return DescendantsCreateResult{}, fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()

	parent, err := registry.Get(ctx, conn, params.Parent)
	if err != nil {
		return DescendantsCreateResult{}, err
	}
	if parent.Status != registry.StatusActive && parent.Status != registry.StatusSuspended {
		return DescendantsCreateResult{}, fmt.Errorf("tenant %q is %s: %w", parent.ID, parent.Status, registry.ErrConflict)
	}
	target, err := p.pickPlacement(ctx, conn, TenantCreateParams{ID: params.IDs[0], Tier: registry.TierShared, Placement: params.Placement})
	if err != nil {
		return DescendantsCreateResult{}, err
	}

	// 1. Register the new ids as provisioning; find those of an earlier call that stopped half-way.
	type pending struct{ id, placement string }
	var (
		todo []pending
		res  = DescendantsCreateResult{Created: []string{}, Existing: []string{}}
	)
	err = p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
		// The parent stays as it is until commit: a delete of it cannot run across.
		cur, err := registry.GetForUpdate(ctx, tx, params.Parent)
		if err != nil {
			return err
		}
		if cur.Status != registry.StatusActive && cur.Status != registry.StatusSuspended {
			return fmt.Errorf("tenant %q is %s: %w", cur.ID, cur.Status, registry.ErrConflict)
		}
		pl, err := registry.GetPlacement(ctx, tx, target)
		if err == nil {
			pl, err = registry.LockPlacement(ctx, tx, target, pl.MaxTenants > 0)
		}
		if err != nil {
			return err
		}
		if err := admissible(pl, registry.TierShared); err != nil {
			return err
		}
		if pl.MaxTenants > 0 && pl.Tenants+len(params.IDs) > pl.MaxTenants {
			return fmt.Errorf("placement %q has room for %d more tenants, not %d: %w", pl.Name,
				max(pl.MaxTenants-pl.Tenants, 0), len(params.IDs), registry.ErrNoPlacement)
		}
		rows, err := tx.Query(ctx, `INSERT INTO tenantmem_control.tenants
				(tenant_id, tier, schema_name, placement_id, status, text_search_config)
			SELECT id, 'shared', $2, $3, 'provisioning', $4 FROM unnest($1::text[]) AS id
			ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id`,
			params.IDs, schema.SharedSchema, target, cur.TextSearchConfig)
		if err != nil {
			return err
		}
		inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tenantmem_control.audit_log (tenant_id, event, actor, detail)
			SELECT id, 'create_started', $2, jsonb_build_object('tier', 'shared', 'schema', $3::text,
				'placement', $4::text, 'parent', $5::text) FROM unnest($1::text[]) AS id`,
			inserted, p.cfg.Actor, schema.SharedSchema, target, params.Parent); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT tenant_id, placement_id, status = 'provisioning' AND tier = 'shared'
			FROM tenantmem_control.tenants WHERE tenant_id = ANY($1) ORDER BY tenant_id`, params.IDs)
		if err != nil {
			return err
		}
		return forEachRow(rows, func(id, placement string, resumable bool) {
			if resumable {
				todo = append(todo, pending{id, placement})
			} else {
				res.Existing = append(res.Existing, id)
			}
		})
	})
	if err != nil {
		return DescendantsCreateResult{}, err
	}
	if len(todo) == 0 {
		return res, nil
	}

	// 2. Clear what an earlier incarnation of each id may have left in its shared schema (see
	// makeLocation), per placement, and read the shared schema's version.
	versions := map[string]int64{}
	for _, t := range todo {
		if _, ok := versions[t.placement]; ok {
			continue
		}
		v, err := p.sharedSchemaVersion(ctx, t.placement)
		if err != nil {
			return DescendantsCreateResult{}, onPlacement(t.placement, err)
		}
		versions[t.placement] = v
		var ids []string
		for _, u := range todo {
			if u.placement == t.placement {
				ids = append(ids, u.id)
			}
		}
		if err := p.clearShared(ctx, conn, t.placement, ids); err != nil {
			return DescendantsCreateResult{}, err
		}
	}

	// 3. Activate, audit and announce.
	err = p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
		res.Created = res.Created[:0]
		for placementName, v := range versions {
			var ids []string
			for _, u := range todo {
				if u.placement == placementName {
					ids = append(ids, u.id)
				}
			}
			rows, err := tx.Query(ctx, `UPDATE tenantmem_control.tenants SET status = 'active', migration_version = $2,
					updated_at = now()
				WHERE tenant_id = ANY($1) AND status = 'provisioning' AND tier = 'shared' RETURNING tenant_id`, ids, v)
			if err != nil {
				return err
			}
			done, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			res.Created = append(res.Created, done...)
			if _, err := tx.Exec(ctx, `INSERT INTO tenantmem_control.audit_log (tenant_id, event, actor, detail)
				SELECT id, 'created', $2, jsonb_build_object('migration_version', $3::bigint, 'parent', $4::text,
					'tier', 'shared', 'placement', $5::text) FROM unnest($1::text[]) AS id`,
				done, p.cfg.Actor, v, params.Parent, placementName); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_notify($2, json_build_object('tenant_id', id, 'event', 'created')::text)
				FROM unnest($1::text[]) AS id`, done, registry.Channel); err != nil {
				return err
			}
		}
		slices.Sort(res.Created)
		return registry.Audit(ctx, tx, params.Parent, "descendants_created", p.cfg.Actor,
			map[string]any{"count": len(res.Created), "placement": target})
	})
	if err != nil {
		return DescendantsCreateResult{}, err
	}
	return res, nil
}

// clearShared deletes the rows of ids from a placement's shared schema, each in its tenant's
// scope (row-level security binds the owner role too).
func (p *Provisioner) clearShared(ctx context.Context, conn *pgxpool.Conn, placementName string, ids []string) error {
	db, release, err := p.mainDB(ctx, conn, placementName)
	if err != nil {
		return onPlacement(placementName, err)
	}
	defer release()
	err = p.inTx(ctx, db, true, func(tx pgx.Tx) error {
		for _, id := range ids {
			if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, id); err != nil {
				return err
			}
			for _, table := range sharedTenantTables() {
				if _, err := tx.Exec(ctx, `DELETE FROM `+ident(schema.SharedSchema)+`.`+ident(table)+` WHERE owner_id = $1`, id); err != nil {
					return fmt.Errorf("delete from %s: %w", table, err)
				}
			}
		}
		return nil
	})
	return onPlacement(placementName, err)
}

// forEachRow reads (text, text, bool) rows.
func forEachRow(rows pgx.Rows, fn func(a, b string, c bool)) error {
	defer rows.Close()
	for rows.Next() {
		var (
			a, b string
			c    bool
		)
		if err := rows.Scan(&a, &b, &c); err != nil {
			return err
		}
		fn(a, b, c)
	}
	if err := rows.Err(); err != nil {
		return errors.Join(errors.New("read tenants"), err)
	}
	return nil
}
