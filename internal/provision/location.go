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

	"github.com/tenantmem/tenantmem/internal/memory"
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
	return schema.NewMigrator(p.migrationLocks(schema.MigratorConfig{
		ConnConfig: cc, Role: s.OwnerRole, EmbeddingDimension: s.EmbeddingDimension, Logger: p.cfg.Logger,
		TenantMigrations: p.cfg.TenantMigrations,
	}))
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
			for _, table := range sharedTenantTables() {
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
		// Connections of ours to it are gone with it: a database of that name made later (a
		// restore, a move back) gets a pool of its own.
		p.pools.Forget(loc.Key())
		return nil
	}
	return fmt.Errorf("tenant %q: unknown tier %q", t.ID, t.Tier)
}

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

// The steps below serve moves and restores, which fill a location with rows they copy: they
// make the location at a given migration version, bring it to the latest, and say whether the
// tenant has the location's schema to itself.

// poolFor returns the pool of a location's database, as the provisioner's login, and what gives
// it back.
func (p *Provisioner) poolFor(ctx context.Context, loc registry.Location) (*pgxpool.Pool, func(), error) {
	pool, release, err := p.pools.Acquire(ctx, loc.Key())
	if err != nil {
		return nil, nil, onPlacement(loc.Placement, err)
	}
	return pool, release, nil
}

// ownsSchema reports whether the tenant has the location's schema to itself (schema and database
// tiers): a copy into it may load first and index after, and its tables may be at any version.
// The shared schema's tables are at the placement's shared version, with other tenants' rows.
func ownsSchema(loc registry.Location) bool { return loc.Tier != registry.TierShared }

// targetLocation is where a restored or moved tenant id's rows go: tier on placementName or,
// when that is empty, on prefer (the archive's or the tenant's current placement) when it takes
// the tier, else on the placement the default policy picks for a new tenant. The placement must
// be registered, active, take the tier and answer.
func (p *Provisioner) targetLocation(ctx context.Context, id string, tier registry.Tier, placementName, prefer string) (registry.Location, error) {
	if _, err := registry.ParseTier(string(tier)); err != nil {
		return registry.Location{}, err
	}
	if placementName != "" {
		if err := registry.ValidatePlacementName(placementName); err != nil {
			return registry.Location{}, err
		}
	}
	_, settings, err := p.ready(ctx)
	if err != nil {
		return registry.Location{}, err
	}
	schemaName, databaseName, err := names(settings, TenantCreateParams{ID: id, Tier: tier})
	if err != nil {
		return registry.Location{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if placementName == "" && prefer != "" {
		if pl, err := registry.GetPlacement(ctx, p.pool, prefer); err == nil && admissible(pl, tier) == nil {
			placementName = prefer
		}
	}
	name, err := p.pickPlacement(ctx, p.pool, TenantCreateParams{ID: id, Tier: tier, Placement: placementName})
	if err != nil {
		return registry.Location{}, err
	}
	return registry.Location{Tier: tier, Placement: name, Database: databaseName, Schema: schemaName, OwnerID: id}, nil
}

// listWork lists a tenant that has just arrived at loc (a restore activated, a move flipped) in
// the embedding work queue of loc's database when it has pending embedding jobs there: the queue
// is per database, and the jobs came with the rows, not through ingest. A failure is logged, not
// returned: the tenant is served, and the worker's reconciliation finds the jobs later.
func (p *Provisioner) listWork(ctx context.Context, loc registry.Location) {
	pool, release, err := p.poolFor(ctx, loc)
	if err == nil {
		defer release()
		_, err = memory.ReconcileWork(ctx, memory.Scope{Pool: pool, Schema: loc.Schema, OwnerID: loc.OwnerID})
	}
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "cannot list the tenant's pending embeddings in its new database's work queue; the worker's reconciliation will",
			"tenant_id", loc.OwnerID, "location", loc.String(), "error", err.Error())
	}
}

// sharedTenantTables are the tables of the shared schema that hold a tenant's rows, in the order
// in which a delete removes them: change capture first (a move's paused capture would refuse the
// deletes; nothing can write there any more once the tenant is deleted or has moved away), then
// the tenant tables children first, then the change log.
func sharedTenantTables() []string {
	tables := []string{schema.ChangeCaptureTable}
	for _, table := range schema.TenantTablesChildrenFirst() {
		tables = append(tables, table.Name)
	}
	return append(tables, schema.ChangeLogTable)
}

// makeLocationAt makes a location the tenant has to itself (ownsSchema) with its tables at
// migration version (a restore loads rows as they were archived, then migrates them; 0 leaves
// them as they are), and returns
// the migrator and pool of its database; release gives the pool back. Idempotent.
func (p *Provisioner) makeLocationAt(ctx context.Context, loc registry.Location, version int64) (*schema.Migrator, *pgxpool.Pool, func(), error) {
	if !ownsSchema(loc) {
		return nil, nil, nil, fmt.Errorf("provision: %s is shared with other tenants", loc)
	}
	t := registry.Tenant{ID: loc.OwnerID}.At(loc)
	if loc.Database != "" {
		if err := p.createDatabase(ctx, nil, t); err != nil {
			return nil, nil, nil, onPlacement(loc.Placement, err)
		}
		tc, err := p.connectTenantDB(ctx, loc.Key())
		if err != nil {
			return nil, nil, nil, onPlacement(loc.Placement, err)
		}
		err = p.prepareTenantDB(ctx, nil, tc, loc)
		_ = tc.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, nil, nil, err
		}
	}
	pool, release, err := p.poolFor(ctx, loc)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*schema.Migrator, *pgxpool.Pool, func(), error) {
		release()
		return nil, nil, nil, onPlacement(loc.Placement, err)
	}
	if err := p.ensureSchema(ctx, pool, loc.Schema); err != nil {
		return fail(err)
	}
	m, err := p.migratorFor(ctx, loc.Key())
	if err != nil {
		return fail(err)
	}
	if version > 0 {
		if _, err := m.UpTo(ctx, schema.TenantSet, loc.Schema, version); err != nil {
			return fail(err)
		}
	}
	return m, pool, release, nil
}

// migrateLocation brings a location's tables to the latest tenant migration (granting the router
// its schema's tables) and returns the version; a shared schema is migrated by Migrate only, so
// its version is read.
func (p *Provisioner) migrateLocation(ctx context.Context, loc registry.Location) (int64, error) {
	if !ownsSchema(loc) {
		return p.sharedSchemaVersion(ctx, loc.Placement)
	}
	pool, release, err := p.poolFor(ctx, loc)
	if err != nil {
		return 0, err
	}
	defer release()
	m, err := p.migratorFor(ctx, loc.Key())
	if err != nil {
		return 0, err
	}
	if loc.Database != "" {
		// A tenant database holds tenant tables, so it has its own embedding work queue.
		if _, err := p.migrateWorkQueue(ctx, pool, m); err != nil {
			return 0, onPlacement(loc.Placement, err)
		}
	}
	// With the schema's default privileges (idempotent): the router gets its grants by name.
	v, err := p.migrateSchema(ctx, m, schema.TenantSet, loc.Schema, true)
	return v, onPlacement(loc.Placement, err)
}

// cleanLocation removes everything of a tenant at a location: its rows (shared tier, change
// capture and log included), its schema or its database. Idempotent.
func (p *Provisioner) cleanLocation(ctx context.Context, loc registry.Location) error {
	return p.dropData(ctx, nil, registry.Tenant{ID: loc.OwnerID}.At(loc))
}
