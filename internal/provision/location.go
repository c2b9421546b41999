package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// This file is where a tenant's location is made and unmade. The tier decides only how: a schema
// in the placement's main database (schema tier), rows in its shared schema (shared tier) or a
// database of its own (database tier). Everything else works from registry.Location.

// mainDB returns where work on a placement's main database runs: for the control database conn
// when given (it holds the tenant's lock, and waiters for the lock hold the pool's other
// connections, so the holder must not wait for one), else the placement's pool. release gives the
// pool back.
func (p *Provisioner) mainDB(ctx context.Context, conn *pgxpool.Conn, placementName string) (db mainConn, release func(), err error) {
	key := registry.DatabaseKey{Placement: placementName}
	if key.IsControl() && conn != nil {
		return conn, func() {}, nil
	}
	pool, release, err := p.pools.Acquire(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	return pool, release, nil
}

// mainConn is a pool or a pooled connection of a placement's main database.
type mainConn interface {
	beginner
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// migratorFor returns the migrator of one database of a placement, as the owner role.
func (p *Provisioner) migratorFor(ctx context.Context, key registry.DatabaseKey) (*schema.Migrator, error) {
	m, s, err := p.ready(ctx)
	if err != nil {
		return nil, err
	}
	if key.IsControl() {
		return m, nil
	}
	cc, err := p.pools.ConnConfig(ctx, key)
	if err != nil {
		return nil, err
	}
	return schema.NewMigrator(schema.MigratorConfig{
		ConnConfig: cc, Role: s.OwnerRole, EmbeddingDimension: s.EmbeddingDimension, Logger: p.cfg.Logger,
		TenantMigrations: p.cfg.TenantMigrations,
	})
}

// sharedSchemaVersion is the migration version of a placement's shared schema, as recorded in the
// registry once its grants were in place, read once per process and refreshed by Migrate.
func (p *Provisioner) sharedSchemaVersion(ctx context.Context, placementName string) (int64, error) {
	p.mu.Lock()
	v, ok := p.sharedVersions[placementName]
	p.mu.Unlock()
	if ok && v > 0 {
		return v, nil
	}
	// The version recorded once the schema's grants were in place (right across processes: a
	// migrate run elsewhere records it), else goose's.
	if v, err := registry.SharedMigrationVersion(ctx, p.pool, placementName); err == nil && v > 0 {
		p.setSharedVersion(placementName, v)
		return v, nil
	}
	m, err := p.migratorFor(ctx, registry.DatabaseKey{Placement: placementName})
	if err != nil {
		return 0, err
	}
	if v, err = m.Version(ctx, schema.TenantSet, schema.SharedSchema); err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, fmt.Errorf("the shared schema of placement %q is not migrated: %w", placementName, ErrNotInitialized)
	}
	p.setSharedVersion(placementName, v)
	return v, nil
}

func (p *Provisioner) setSharedVersion(placementName string, v int64) {
	p.mu.Lock()
	p.sharedVersions[placementName] = v
	p.mu.Unlock()
}

// onPlacement marks a lost or refused connection to a placement as placement.ErrUnavailable,
// naming the placement.
func onPlacement(name string, err error) error {
	if err == nil || errors.Is(err, placement.ErrUnavailable) || !placement.IsConnectionLoss(err) {
		return err
	}
	return fmt.Errorf("placement %q: %w: %w", name, placement.ErrUnavailable, err)
}

// createLocation makes the place of a tenant's rows and brings it to the latest tenant migration,
// idempotently, and returns the migration version. conn holds the tenant's lock.
func (p *Provisioner) createLocation(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) (int64, error) {
	v, err := p.makeLocation(ctx, conn, t)
	return v, onPlacement(t.PlacementID, err)
}

func (p *Provisioner) makeLocation(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) (int64, error) {
	loc := t.Location()
	switch t.Tier {
	case registry.TierShared:
		version, err := p.sharedSchemaVersion(ctx, loc.Placement)
		if err != nil {
			return 0, err
		}
		// A request of an earlier tenant with this id that was still in flight when that tenant
		// was deleted may have committed rows after the delete. They carry this owner id, so
		// remove them before anyone can hold a key again.
		return version, p.dropData(ctx, conn, t)
	case registry.TierSchema:
		db, release, err := p.mainDB(ctx, conn, loc.Placement)
		if err != nil {
			return 0, err
		}
		defer release()
		if err := p.ensureSchema(ctx, db, loc.Schema); err != nil {
			return 0, err
		}
		if err := p.hook(ctx, StepCreateSchema, t.ID); err != nil {
			return 0, err
		}
		m, err := p.migratorFor(ctx, loc.Key())
		if err != nil {
			return 0, err
		}
		// ensureSchema set the schema's default privileges: the tables the migrations create get
		// the router's grants by name, at creation.
		return p.migrateSchema(ctx, m, schema.TenantSet, loc.Schema, false)
	case registry.TierDatabase:
		if err := p.createDatabase(ctx, conn, t); err != nil {
			return 0, err
		}
		if err := p.hook(ctx, StepCreateDatabase, t.ID); err != nil {
			return 0, err
		}
		tc, err := p.connectTenantDB(ctx, loc.Key())
		if err != nil {
			return 0, err
		}
		defer func() { _ = tc.Close(context.WithoutCancel(ctx)) }()
		if err := p.prepareTenantDB(ctx, conn, tc, loc); err != nil {
			return 0, err
		}
		if err := p.hook(ctx, StepCreateSchema, t.ID); err != nil {
			return 0, err
		}
		m, err := p.migratorFor(ctx, loc.Key())
		if err != nil {
			return 0, err
		}
		// The tenant database holds tenant tables, so it has its own embedding work queue.
		if _, err := p.migrateWorkQueue(ctx, tc, m); err != nil {
			return 0, err
		}
		// The tenant schema gets its default privileges before its first table, like any other.
		return p.migrateSchema(ctx, m, schema.TenantSet, loc.Schema, true)
	}
	return 0, fmt.Errorf("tenant %q: unknown tier %q", t.ID, t.Tier)
}

// dropData removes a tenant's rows: its schema (schema tier), its rows of the shared schema
// (shared tier) or its database (database tier), on its placement. Idempotent.
func (p *Provisioner) dropData(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) error {
	return onPlacement(t.PlacementID, p.unmakeLocation(ctx, conn, t))
}

func (p *Provisioner) unmakeLocation(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) error {
	loc := t.Location()
	db, release, err := p.mainDB(ctx, conn, loc.Placement)
	if err != nil {
		return err
	}
	defer release()
	switch t.Tier {
	case registry.TierSchema:
		if t.SchemaName == schema.SharedSchema || !strings.HasPrefix(t.SchemaName, schema.Prefix) || t.SchemaName == schema.Prefix {
			return fmt.Errorf("refusing to drop schema %q of tenant %q", t.SchemaName, t.ID)
		}
		return p.inTx(ctx, db, true, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+ident(t.SchemaName)+` CASCADE`); err != nil {
				return err
			}
			return deleteWork(ctx, tx, t)
		})
	case registry.TierShared:
		// Row-level security binds the owner role too (FORCE), so scope the transaction to the
		// tenant exactly as the router does; chunks go with their documents (ON DELETE CASCADE).
		return p.inTx(ctx, db, true, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, t.ID); err != nil {
				return err
			}
			for _, table := range sharedTables {
				if _, err := tx.Exec(ctx, `DELETE FROM `+ident(schema.SharedSchema)+`.`+ident(table)+` WHERE owner_id = $1`, t.ID); err != nil {
					return fmt.Errorf("delete from %s: %w", table, err)
				}
			}
			return deleteWork(ctx, tx, t)
		})
	case registry.TierDatabase:
		if !schema.IsDatabaseName(t.DatabaseName) {
			return fmt.Errorf("refusing to drop database %q of tenant %q", t.DatabaseName, t.ID)
		}
		s, err := p.deploymentSettings(ctx)
		if err != nil {
			return err
		}
		exists, comment, err := databaseMarker(ctx, db, t.DatabaseName)
		if err != nil || !exists {
			return err
		}
		if comment != "" && comment != marker(s, t) {
			// Not ours (its creation was refused for that reason): nothing of the tenant to drop.
			p.cfg.Logger.WarnContext(ctx, "not dropping a database that belongs to someone else", "tenant_id", t.ID,
				"placement", t.PlacementID, "database", t.DatabaseName, "comment", comment)
			return nil
		}
		// FORCE ends the router's idle connections to it; the tenant is already unreachable.
		if _, err := db.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(t.DatabaseName)+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop database %s: %w", t.DatabaseName, err)
		}
		return nil
	}
	return fmt.Errorf("tenant %q: unknown tier %q", t.ID, t.Tier)
}

// sharedTables are the tenant tables whose rows a shared-tier delete removes, children first.
var sharedTables = []string{"search_history", "idempotency_keys", "tenant_usage", "chunk_terms", "chunk_stats", "chunks", "documents"}

// marker is the comment of a tenant database, which says whose it is: a database of the derived
// name that carries another marker is never adopted or dropped.
func marker(s registry.Settings, t registry.Tenant) string {
	return "tenantmem deployment " + s.DeploymentID + " tenant " + t.ID
}

func databaseMarker(ctx context.Context, db mainConn, name string) (exists bool, comment string, err error) {
	err = db.QueryRow(ctx, `SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = $1`,
		name).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("look up database %s: %w", name, err)
	}
	return true, comment, nil
}

// createDatabase creates a database-tier tenant's database on its placement, owned by the owner
// role, marked with the tenant, with CONNECT for the router role only. It adopts a database of
// that name that a crash left without its marker, and refuses one marked for another tenant.
func (p *Provisioner) createDatabase(ctx context.Context, conn *pgxpool.Conn, t registry.Tenant) error {
	s, err := p.deploymentSettings(ctx)
	if err != nil {
		return err
	}
	if !schema.IsDatabaseName(t.DatabaseName) {
		return fmt.Errorf("tenant %q: %q is not a tenant database name", t.ID, t.DatabaseName)
	}
	db, release, err := p.mainDB(ctx, conn, t.PlacementID)
	if err != nil {
		return err
	}
	defer release()
	name, mark := ident(t.DatabaseName), marker(s, t)
	exists, comment, err := databaseMarker(ctx, db, t.DatabaseName)
	if err != nil {
		return err
	}
	if !exists {
		// CREATE DATABASE cannot run in a transaction; template0 keeps whatever was added to
		// template1 out of tenant databases.
		_, err := db.Exec(ctx, `CREATE DATABASE `+name+` OWNER `+ident(s.OwnerRole)+` TEMPLATE template0`)
		if err != nil && !isCode(err, pgerrcode.DuplicateDatabase) {
			if isCode(err, pgerrcode.InsufficientPrivilege) {
				return fmt.Errorf("create database %s: %w (the provisioner's login on placement %q needs CREATEDB or superuser)",
					t.DatabaseName, err, t.PlacementID)
			}
			return fmt.Errorf("create database %s: %w", t.DatabaseName, err)
		}
		if _, comment, err = databaseMarker(ctx, db, t.DatabaseName); err != nil {
			return err
		}
	}
	if comment != "" && comment != mark {
		return fmt.Errorf("tenant %q: database %s on placement %q belongs to %q: %w", t.ID, t.DatabaseName,
			t.PlacementID, comment, registry.ErrExists)
	}
	for _, stmt := range []string{
		`COMMENT ON DATABASE ` + name + ` IS ` + quoteLiteral(mark),
		`REVOKE ALL ON DATABASE ` + name + ` FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE ` + name + ` TO ` + ident(s.RouterRole),
	} {
		if _, err := db.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

// connectTenantDB opens one connection to a tenant database as the provisioner's login.
func (p *Provisioner) connectTenantDB(ctx context.Context, key registry.DatabaseKey) (*pgx.Conn, error) {
	cc, err := p.pools.ConnConfig(ctx, key)
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", key, err)
	}
	return c, nil
}

// prepareTenantDB gives a tenant database what init gives the main one: the extensions schema
// with pgvector (usable by both roles), the tenant schema owned by the owner role, and the
// LEAKPROOF text match operator when the placement's main database has it. Idempotent.
func (p *Provisioner) prepareTenantDB(ctx context.Context, conn *pgxpool.Conn, c *pgx.Conn, loc registry.Location) error {
	leakproof, err := p.leakproofOn(ctx, conn, loc.Placement)
	if err != nil {
		return err
	}
	owner, router := ident(p.cfg.OwnerRole), ident(p.cfg.RouterRole)
	ext := ident(schema.ExtensionSchema)
	stmts := []string{
		`CREATE SCHEMA IF NOT EXISTS ` + ext,
		`CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA ` + ext,
		`GRANT USAGE ON SCHEMA ` + ext + ` TO ` + owner + `, ` + router,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`CREATE SCHEMA IF NOT EXISTS ` + ident(loc.Schema) + ` AUTHORIZATION ` + owner,
	}
	if leakproof {
		stmts = append(stmts, `ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF`)
	}
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("provision: prepare tenant database %s: %w", loc.Key(), err)
	}
	return nil
}

// leakproofOn reports whether a placement's main database has the text match operator marked
// LEAKPROOF (init --leakproof-text-search), so its tenant databases follow it.
func (p *Provisioner) leakproofOn(ctx context.Context, conn *pgxpool.Conn, placementName string) (bool, error) {
	db, release, err := p.mainDB(ctx, conn, placementName)
	if err != nil {
		return false, err
	}
	defer release()
	return isLeakproof(ctx, db)
}

func isLeakproof(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (bool, error) {
	var leakproof bool
	err := db.QueryRow(ctx, `SELECT proleakproof FROM pg_proc WHERE oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure`).
		Scan(&leakproof)
	if err != nil {
		return false, fmt.Errorf("read the text match operator: %w", err)
	}
	return leakproof, nil
}

// deploymentSettings are the settings read by ready.
func (p *Provisioner) deploymentSettings(ctx context.Context) (registry.Settings, error) {
	_, s, err := p.ready(ctx)
	return s, err
}
