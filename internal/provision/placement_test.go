package provision_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// superPool is a superuser pool on a placement's main database (or one of its tenant databases).
func superPool(t *testing.T, server *pgtest.Server, dbname string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.WithDatabase(t, server.URL(), dbname))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// routerPool logs in as the router role on a database of a server.
func routerPool(t *testing.T, server *pgtest.Server, dbname string) *pgxpool.Pool {
	t.Helper()
	u := pgtest.WithUser(t, pgtest.WithDatabase(t, server.URL(), dbname), provision.DefaultRouterRole, "")
	pool, err := pgxpool.New(context.Background(), u)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// primary is the test server of NewDatabase as a pgtest.Server value.
func primary(t *testing.T, e *env) (*pgtest.Server, string) {
	t.Helper()
	var db string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db))
	return pgtest.Existing(pgtest.ServerURL()), db
}

func TestAddPlacementPreparesTheServerLikeInit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	second := pgtest.Second(t)
	pl := e.addPlacement(t, "p2", second)
	require.Equal(t, registry.PlacementActive, pl.State)
	require.Equal(t, []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase}, pl.Tiers)
	require.Zero(t, pl.Tenants)

	// The server got what init gives the control server: roles, pgvector in extensions, the
	// shared schema at the latest tenant migration, the router's grants.
	db := superPool(t, second, pl.Database)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	versions, err := schema.Versions(ctx, db, schema.TenantSet, []string{schema.SharedSchema})
	require.NoError(t, err)
	require.Equal(t, latest, versions[0])
	var extSchema string
	require.NoError(t, db.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		WHERE e.extname = 'vector'`).Scan(&extSchema))
	require.Equal(t, schema.ExtensionSchema, extSchema)
	var super, bypass bool
	require.NoError(t, db.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`,
		provision.DefaultRouterRole).Scan(&super, &bypass))
	require.False(t, super || bypass)
	var typ string
	require.NoError(t, db.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'tenantmem_shared.chunks'::regclass AND attname = 'embedding'`).Scan(&typ))
	require.Equal(t, "extensions.vector(384)", typ, "the deployment's dimension")
	// The router role reads and writes the shared tables there, under row-level security.
	router := routerPool(t, second, pl.Database)
	var n int
	require.NoError(t, router.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.documents`).Scan(&n))
	require.Zero(t, n)

	// Idempotent: adding it again prepares again and only updates the hints.
	again, err := e.prov.AddPlacement(ctx, provision.PlacementAddParams{Name: "p2", Host: pl.Host, Port: pl.Port,
		Database: pl.Database, MaxTenants: 10, Description: "second server"})
	require.NoError(t, err)
	require.Equal(t, 10, again.MaxTenants)
	require.Equal(t, "second server", again.Description)
	// The same name elsewhere, or the same endpoint under another name, is a conflict.
	_, err = e.prov.AddPlacement(ctx, provision.PlacementAddParams{Name: "p2", Host: pl.Host, Port: pl.Port, Database: "other"})
	require.ErrorIs(t, err, registry.ErrExists)
	_, err = e.prov.AddPlacement(ctx, provision.PlacementAddParams{Name: "p3", Host: pl.Host, Port: pl.Port, Database: pl.Database})
	require.ErrorIs(t, err, registry.ErrExists)

	ps, err := e.prov.ListPlacements(ctx)
	require.NoError(t, err)
	require.Len(t, ps, 2)
	require.Equal(t, "local", ps[0].Name)
	require.Equal(t, "p2", ps[1].Name)
	events, err := registry.AuditLog(ctx, e.pool, "")
	require.NoError(t, err)
	require.Equal(t, []string{"placement_added", "placement_updated"}, eventNames(events))
}

func TestAddPlacementRefusesBadInputAndRegistersNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	second := pgtest.Second(t)
	ok := provision.PlacementAddParams{Name: "p2", Host: second.Host(), Port: second.Port(), Database: "postgres"}
	with := func(f func(*provision.PlacementAddParams)) provision.PlacementAddParams {
		p := ok
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name  string
		given provision.PlacementAddParams
		field string
	}{
		{"empty name", with(func(p *provision.PlacementAddParams) { p.Name = "" }), "placement"},
		{"upper case", with(func(p *provision.PlacementAddParams) { p.Name = "EU1" }), "placement"},
		{"space", with(func(p *provision.PlacementAddParams) { p.Name = "eu 1" }), "placement"},
		{"quote", with(func(p *provision.PlacementAddParams) { p.Name = "eu'1" }), "placement"},
		{"64 characters", with(func(p *provision.PlacementAddParams) { p.Name = strings.Repeat("a", 64) }), "placement"},
		{"local", with(func(p *provision.PlacementAddParams) { p.Name = "local" }), "placement"},
		{"empty host", with(func(p *provision.PlacementAddParams) { p.Host = "" }), "host"},
		{"host list", with(func(p *provision.PlacementAddParams) { p.Host = "a,b" }), "host"},
		{"host with options", with(func(p *provision.PlacementAddParams) { p.Host = "a dbname=x" }), "host"},
		{"port 0", with(func(p *provision.PlacementAddParams) { p.Port = 0 }), "port"},
		{"port 70000", with(func(p *provision.PlacementAddParams) { p.Port = 70000 }), "port"},
		{"empty database", with(func(p *provision.PlacementAddParams) { p.Database = "" }), "database"},
		{"database with quote", with(func(p *provision.PlacementAddParams) { p.Database = `x"y` }), "database"},
		{"negative capacity", with(func(p *provision.PlacementAddParams) { p.MaxTenants = -1 }), "max_tenants"},
		{"unknown tier", with(func(p *provision.PlacementAddParams) { p.Tiers = []registry.Tier{"gold"} }), "tiers"},
		{"the control database", with(func(p *provision.PlacementAddParams) {
			srv, db := primary(t, e)
			p.Host, p.Port, p.Database = srv.Host(), srv.Port(), db
		}), "database"},
	} {
		_, err := e.prov.AddPlacement(ctx, tc.given)
		var fe *registry.FieldError
		require.ErrorAs(t, err, &fe, tc.name)
		require.Equal(t, tc.field, fe.Field, tc.name)
	}

	// An unreachable server: a clear error, nothing registered.
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	_, err = e.prov.AddPlacement(ctx, with(func(p *provision.PlacementAddParams) { p.Port = closedPort }))
	require.ErrorIs(t, err, placement.ErrUnavailable)
	require.ErrorContains(t, err, `placement "p2"`)

	// No credentials for the provisioner's login there (and no passfile entry).
	bare, err := provision.New(provision.Config{Pool: e.pool, Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(bare.Close)
	_, err = bare.AddPlacement(ctx, ok)
	require.ErrorIs(t, err, placement.ErrNoCredentials)
	require.ErrorContains(t, err, "p2")

	ps, err := e.prov.ListPlacements(ctx)
	require.NoError(t, err)
	require.Len(t, ps, 1, "only local")
	_, err = e.prov.GetPlacement(ctx, "p2")
	require.ErrorIs(t, err, registry.ErrNotFound)
}

// TestEveryTierOnEveryPlacement creates tenants of the three tiers on the control server and on
// a second server, writes through each as the router role, and checks where the rows are.
func TestEveryTierOnEveryPlacement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	second := pgtest.Second(t)
	p2 := e.addPlacement(t, "p2", second)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	servers := map[string]*pgtest.Server{"p2": second}
	var localDB string
	servers["local"], localDB = primary(t, e)
	mainDB := map[string]string{"local": localDB, "p2": p2.Database}

	for _, pl := range []string{"local", "p2"} {
		for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
			id := fmt.Sprintf("Org-%s/%s.tenant", pl, tier)
			res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier, Placement: pl})
			require.NoError(t, err, id)
			tn := res.Tenant
			require.Equal(t, registry.StatusActive, tn.Status)
			require.Equal(t, pl, tn.PlacementID)
			require.Equal(t, latest, tn.MigrationVersion)
			loc := tn.Location()
			dbname := mainDB[pl]
			if tier == registry.TierDatabase {
				require.True(t, schema.IsDatabaseName(tn.DatabaseName), tn.DatabaseName)
				require.Equal(t, schema.DatabaseSchema, tn.SchemaName)
				require.Equal(t, tn.DatabaseName, loc.Database)
				dbname = tn.DatabaseName
			} else {
				require.Empty(t, loc.Database)
			}
			// Write and read as the router role through the tenant's own scope.
			router := routerPool(t, servers[pl], dbname)
			insertDocument(t, router, tn, "doc of "+id)
			require.Equal(t, 1, countDocuments(t, router, tn))
			// Row-level security holds there too: with no owner set nothing is visible.
			var n int
			require.NoError(t, router.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{tn.SchemaName, "documents"}.Sanitize()).Scan(&n))
			require.Zero(t, n)
		}
	}
	// A database-tier tenant's database: owned by the owner role, marked with the tenant, closed
	// to PUBLIC, open to the router role, with pgvector in its extensions schema.
	tn, err := e.prov.GetTenant(ctx, "Org-p2/database.tenant")
	require.NoError(t, err)
	sdb := superPool(t, second, p2.Database)
	var owner, comment string
	var publicConnect, routerConnect bool
	require.NoError(t, sdb.QueryRow(ctx, `SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'),
		has_database_privilege('public', datname, 'CONNECT'), has_database_privilege($2, datname, 'CONNECT')
		FROM pg_database WHERE datname = $1`, tn.DatabaseName, provision.DefaultRouterRole).
		Scan(&owner, &comment, &publicConnect, &routerConnect))
	require.Equal(t, provision.DefaultOwnerRole, owner)
	require.Contains(t, comment, "tenant Org-p2/database.tenant")
	require.False(t, publicConnect)
	require.True(t, routerConnect)
	tdb := superPool(t, second, tn.DatabaseName)
	var typ string
	require.NoError(t, tdb.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'tenantmem_tenant.chunks'::regclass AND attname = 'embedding'`).Scan(&typ))
	require.Equal(t, "extensions.vector(384)", typ)

	// The router role cannot create anything in a tenant database.
	rdb := routerPool(t, second, tn.DatabaseName)
	for _, stmt := range []string{`CREATE TABLE tenantmem_tenant.x (a int)`, `CREATE TABLE public.x (a int)`,
		`CREATE TEMPORARY TABLE x (a int)`, `CREATE SCHEMA x`} {
		_, err := rdb.Exec(ctx, stmt)
		requireCode(t, err, "42501")
	}

	// Grants by default privileges reach every database that holds tenant tables: the router gets
	// DML on the tables the owner creates in the tenant schemas of placement add's main database
	// and of a tenant database, and each has its embedding work queue, readable by the router.
	for _, c := range []struct {
		db     string
		schema string
	}{{p2.Database, schema.SharedSchema}, {tn.DatabaseName, schema.DatabaseSchema}} {
		sp := superPool(t, second, c.db)
		var defaults int
		require.NoError(t, sp.QueryRow(ctx, `SELECT count(*) FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
			WHERE n.nspname = $1 AND pg_get_userbyid(d.defaclrole) = $2 AND array_to_string(d.defaclacl, ',') LIKE '%' || $3 || '=%'`,
			c.schema, provision.DefaultOwnerRole, provision.DefaultRouterRole).Scan(&defaults))
		require.Equal(t, 2, defaults, "tables and sequences of %s in %s", c.schema, c.db)
		var queued int
		require.NoError(t, routerPool(t, second, c.db).QueryRow(ctx,
			`SELECT count(*) FROM `+schema.PlacementSchema+`.embedding_work`).Scan(&queued), c.db)
	}

	// Placement counts.
	ps, err := e.prov.ListPlacements(ctx)
	require.NoError(t, err)
	for _, p := range ps {
		require.Equal(t, 3, p.Tenants, p.Name)
	}

	// Delete drops each kind of location on each placement.
	for _, pl := range []string{"local", "p2"} {
		for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
			id := fmt.Sprintf("Org-%s/%s.tenant", pl, tier)
			tn, err := e.prov.GetTenant(ctx, id)
			require.NoError(t, err)
			require.NoError(t, e.prov.DeleteTenant(ctx, id))
			sp := superPool(t, servers[pl], mainDB[pl])
			var exists bool
			switch tier {
			case registry.TierDatabase:
				require.NoError(t, sp.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tn.DatabaseName).Scan(&exists))
			case registry.TierSchema:
				require.NoError(t, sp.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, tn.SchemaName).Scan(&exists))
			case registry.TierShared:
				require.NoError(t, sp.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenantmem_shared.documents WHERE owner_id = $1)`, id).Scan(&exists))
			}
			require.False(t, exists, "%s on %s", tier, pl)
		}
	}
}

func TestDefaultPlacementPolicyAndStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	e.addPlacement(t, "p2", pgtest.Second(t))
	create := func(id string, tier registry.Tier, pl string) (registry.Tenant, error) {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier, Placement: pl})
		return res.Tenant, err
	}
	// Fewest tenants first, ties by name: local, then p2, then local...
	var got []string
	for i := range 4 {
		tn, err := create(fmt.Sprintf("auto-%d", i), registry.TierShared, "")
		require.NoError(t, err)
		got = append(got, tn.PlacementID)
	}
	require.Equal(t, []string{"local", "p2", "local", "p2"}, got)

	// Draining: served, but takes no new tenant, explicitly or by default.
	pl, err := e.prov.DrainPlacement(ctx, "p2")
	require.NoError(t, err)
	require.Equal(t, registry.PlacementDraining, pl.State)
	_, err = create("to-p2", registry.TierSchema, "p2")
	require.ErrorIs(t, err, registry.ErrConflict)
	require.ErrorContains(t, err, "draining")
	tn, err := create("auto-4", registry.TierSchema, "")
	require.NoError(t, err)
	require.Equal(t, "local", tn.PlacementID)
	// With every placement draining, there is nowhere to go.
	_, err = e.prov.DrainPlacement(ctx, "local")
	require.NoError(t, err)
	_, err = create("nowhere", registry.TierSchema, "")
	require.ErrorIs(t, err, registry.ErrConflict)
	_, err = e.prov.GetTenant(ctx, "nowhere")
	require.ErrorIs(t, err, registry.ErrNotFound, "nothing registered")
	_, err = e.prov.ActivatePlacement(ctx, "local")
	require.NoError(t, err)

	// Disabled: no new tenants either; its tenants can still be deleted.
	_, err = e.prov.DisablePlacement(ctx, "p2")
	require.NoError(t, err)
	_, err = create("to-p2", registry.TierShared, "p2")
	require.ErrorIs(t, err, registry.ErrConflict)
	require.NoError(t, e.prov.DeleteTenant(ctx, "auto-1"))

	// Remove: refused while it holds tenants, and always for local.
	err = e.prov.RemovePlacement(ctx, "p2")
	require.ErrorIs(t, err, registry.ErrConflict)
	require.ErrorContains(t, err, "1 tenants")
	require.ErrorIs(t, e.prov.RemovePlacement(ctx, "local"), registry.ErrConflict)
	require.ErrorIs(t, e.prov.RemovePlacement(ctx, "nope"), registry.ErrNotFound)
	require.NoError(t, e.prov.DeleteTenant(ctx, "auto-3"))
	require.NoError(t, e.prov.RemovePlacement(ctx, "p2"))
	_, err = e.prov.GetPlacement(ctx, "p2")
	require.ErrorIs(t, err, registry.ErrNotFound)

	// A placement's tiers and capacity.
	p3, err := e.prov.AddPlacement(ctx, provision.PlacementAddParams{Name: "p3", Host: pl.Host, Port: pl.Port, Database: pl.Database,
		Tiers: []registry.Tier{registry.TierShared}, MaxTenants: 1})
	require.NoError(t, err)
	_, err = create("db-on-p3", registry.TierDatabase, "p3")
	var fe *registry.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "tier", fe.Field)
	require.Contains(t, fe.Message, "does not take the database tier")
	_, err = create("s1", registry.TierShared, p3.Name)
	require.NoError(t, err)
	_, err = create("s2", registry.TierShared, p3.Name)
	require.ErrorIs(t, err, registry.ErrConflict)
	require.ErrorContains(t, err, "full")
}

// TestDatabaseTierCreateAndDeleteResumeAfterACrashAtEveryStep stops a database-tier create and
// delete at every step, on both placements, and runs them again.
func TestDatabaseTierCreateAndDeleteResumeAfterACrashAtEveryStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	crash := errors.New("simulated crash")
	var crashAt sync.Map // tenant id -> step
	e := newEnv(t, func(_ context.Context, step, tenantID string) error {
		if s, ok := crashAt.Load(tenantID); ok && s == step {
			return crash
		}
		return nil
	})
	second := pgtest.Second(t)
	p2 := e.addPlacement(t, "p2", second)
	_, localDB := primary(t, e)
	for _, pl := range []string{"local", "p2"} {
		server, mainDB := pgtest.Existing(pgtest.ServerURL()), localDB
		if pl == "p2" {
			server, mainDB = second, p2.Database
		}
		for _, step := range []string{provision.StepCreateRegistered, provision.StepCreateDatabase,
			provision.StepCreateSchema, provision.StepCreateMigrated} {
			id := pl + "-" + strings.NewReplacer(":", "-").Replace(step)
			crashAt.Store(id, step)
			_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierDatabase, Placement: pl})
			require.ErrorIs(t, err, crash)
			half, err := e.prov.GetTenant(ctx, id)
			require.NoError(t, err)
			require.Equal(t, registry.StatusProvisioning, half.Status)
			require.NotEmpty(t, half.DatabaseName, "the database name is in the registry before the database exists")
			crashAt.Delete(id)
			// Resuming without naming the placement finishes on the recorded one.
			res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierDatabase})
			require.NoError(t, err, step)
			require.Equal(t, pl, res.Tenant.PlacementID)
			require.Equal(t, half.DatabaseName, res.Tenant.DatabaseName)
			insertDocument(t, routerPool(t, server, res.Tenant.DatabaseName), res.Tenant, "resumed")
		}
		for _, step := range []string{provision.StepDeleteMarked, provision.StepDeleteDropped} {
			id := pl + "-" + strings.NewReplacer(":", "-").Replace(provision.StepCreateMigrated)
			if step == provision.StepDeleteDropped {
				id = pl + "-" + strings.NewReplacer(":", "-").Replace(provision.StepCreateSchema)
			}
			tn, err := e.prov.GetTenant(ctx, id)
			require.NoError(t, err)
			crashAt.Store(id, step)
			require.ErrorIs(t, e.prov.DeleteTenant(ctx, id), crash)
			crashAt.Delete(id)
			require.NoError(t, e.prov.DeleteTenant(ctx, id))
			var exists bool
			require.NoError(t, superPool(t, server, mainDB).QueryRow(ctx,
				`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tn.DatabaseName).Scan(&exists))
			require.False(t, exists, step)
			events, err := registry.AuditLog(ctx, e.pool, id)
			require.NoError(t, err)
			require.Equal(t, []string{"create_started", "create_resumed", "created", "delete_started", "delete_resumed", "deleted"},
				eventNames(events))
		}
	}
}

// TestDatabaseTierNamesNeverCollide covers ids whose database names would collide: with another
// tenant's registry entry, with a database someone else made, and at PostgreSQL's 63-byte limit.
func TestDatabaseTierNamesNeverCollide(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	s, err := registry.GetSettings(ctx, e.pool)
	require.NoError(t, err)

	// Another registry entry already holds the name this id derives (a forced hash collision).
	name, err := schema.DatabaseName(s.DeploymentID, "victim")
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, database_name, status)
		VALUES ('squatter', 'database', 'tenantmem_tenant', $1, 'active')`, name)
	require.NoError(t, err)
	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "victim", Tier: registry.TierDatabase})
	require.ErrorIs(t, err, registry.ErrExists)
	_, err = e.prov.GetTenant(ctx, "victim")
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = e.pool.Exec(ctx, `DELETE FROM tenantmem_control.tenants WHERE tenant_id = 'squatter'`)
	require.NoError(t, err)

	// A database of that name made by someone else is never adopted, and never dropped.
	_, err = e.pool.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = e.pool.Exec(context.Background(), `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize())
	})
	_, err = e.pool.Exec(ctx, `COMMENT ON DATABASE `+pgx.Identifier{name}.Sanitize()+` IS 'someone else''s'`)
	require.NoError(t, err)
	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "victim", Tier: registry.TierDatabase})
	require.ErrorIs(t, err, registry.ErrExists)
	require.ErrorContains(t, err, "someone else's")
	require.NoError(t, e.prov.DeleteTenant(ctx, "victim"), "the half-created tenant can be deleted")
	var exists bool
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists))
	require.True(t, exists, "the foreign database is left alone")

	// The longest ids fit, and lookalikes get their own databases.
	long := strings.Repeat("Z", 120) + "/" + strings.Repeat("y", 134)
	for _, id := range []string{long, long[:254] + "x", "acme-corp", "acme_corp", "ACME.corp"} {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierDatabase})
		require.NoError(t, err, id)
		require.LessOrEqual(t, len(res.Tenant.DatabaseName), 63)
	}
	var dbs int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE starts_with(shobj_description(oid, 'pg_database'), $1)`,
		e.databaseMarker(t)).Scan(&dbs))
	require.Equal(t, 5, dbs)
}

// TestMigrateAcrossPlacements migrates tenants of every tier on three servers, one of which is
// down for the first run, disabled for the second, and back for the third; a run killed part-way
// is finished by the next.
func TestMigrateAcrossPlacements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	second, third := pgtest.Second(t), pgtest.NewServer(t)
	placements := map[string]registry.Placement{"p2": e.addPlacement(t, "p2", second), "p3": e.addPlacement(t, "p3", third)}
	servers := map[string]*pgtest.Server{"p2": second, "p3": third}
	var localDB string
	servers["local"], localDB = primary(t, e)
	placements["local"] = registry.Placement{Name: "local", Database: localDB}
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	var tenants []registry.Tenant
	for _, pl := range []string{"local", "p2", "p3"} {
		for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
			for i := range 2 {
				res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("%s-%s-%d", pl, tier, i), Tier: tier, Placement: pl})
				require.NoError(t, err)
				tenants = append(tenants, res.Tenant)
			}
		}
	}
	// As if a new tenant migration had been released: every tenant schema back to nothing.
	reset := func() {
		for _, tn := range tenants {
			if tn.Tier == registry.TierShared {
				continue
			}
			dbname := placements[tn.PlacementID].Database
			if tn.Tier == registry.TierDatabase {
				dbname = tn.DatabaseName
			}
			s := pgx.Identifier{tn.SchemaName}.Sanitize()
			_, err := superPool(t, servers[tn.PlacementID], dbname).Exec(ctx,
				`DROP SCHEMA `+s+` CASCADE; CREATE SCHEMA `+s+` AUTHORIZATION `+provision.DefaultOwnerRole)
			require.NoError(t, err)
			_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = 0 WHERE tenant_id = $1`, tn.ID)
			require.NoError(t, err)
		}
	}
	perPlacement := 1 + 4 // the shared schema, two schema-tier and two database-tier tenants

	// p3 is down: reported, skipped, its schemas count as failed; the others are migrated.
	reset()
	third.Stop(t)
	var last provision.MigrateProgress
	rep, err := e.prov.Migrate(ctx, provision.MigrateParams{Progress: func(p provision.MigrateProgress) { last = p }})
	require.NoError(t, err)
	require.Equal(t, 3*perPlacement, rep.Schemas)
	require.Equal(t, provision.MigrateProgress{Done: 3 * perPlacement, Total: 3 * perPlacement, Failed: perPlacement}, last)
	require.Equal(t, 8, rep.Applied, "the schema and database tenants of local and p2")
	require.Len(t, rep.Failed, perPlacement)
	for _, f := range rep.Failed {
		require.Equal(t, "p3", f.Placement)
		require.ErrorIs(t, f.Err, placement.ErrUnavailable)
	}
	byName := map[string]provision.PlacementReport{}
	for _, pr := range rep.Placements {
		byName[pr.Name] = pr
	}
	require.True(t, byName["p3"].Skipped)
	require.ErrorIs(t, byName["p3"].Err, placement.ErrUnavailable)
	require.False(t, byName["p2"].Skipped)

	// Disabled while down: skipped without a failure.
	_, err = e.prov.DisablePlacement(ctx, "p3")
	require.NoError(t, err)
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Zero(t, rep.Applied)

	// Back: the next run finishes p3.
	third.Start(t)
	_, err = e.prov.ActivatePlacement(ctx, "p3")
	require.NoError(t, err)
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Equal(t, 4, rep.Applied)

	// Killed part-way (every placement), finished by the next run.
	reset()
	cctx, cancel := context.WithCancel(ctx)
	_, err = e.prov.Migrate(cctx, provision.MigrateParams{Progress: func(p provision.MigrateProgress) {
		if p.Done >= 4 {
			cancel()
		}
	}})
	cancel()
	require.Error(t, err)
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Positive(t, rep.Applied)
	for _, tn := range tenants {
		got, err := e.prov.GetTenant(ctx, tn.ID)
		require.NoError(t, err)
		require.Equal(t, latest, got.MigrationVersion, tn.ID)
		dbname := placements[tn.PlacementID].Database
		if tn.Tier == registry.TierDatabase {
			dbname = tn.DatabaseName
		}
		// The router's grants are back: it can write.
		insertDocument(t, routerPool(t, servers[tn.PlacementID], dbname), got, "after migrate")
	}
	// Nothing pending: nothing done, and no tenant database is even connected to.
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Zero(t, rep.Applied)
}

// TestCreateTenantOnAServerThatIsDown: a clear error, nothing registered; once the server is back
// the same call succeeds. Deleting a tenant whose server is down leaves it deleting, and the next
// delete finishes.
func TestCreateTenantOnAServerThatIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	srv := pgtest.NewServer(t)
	e.addPlacement(t, "p3", srv)
	before, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "before", Tier: registry.TierDatabase, Placement: "p3"})
	require.NoError(t, err)

	srv.Stop(t)
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "down-" + string(tier), Tier: tier, Placement: "p3"})
		require.ErrorIs(t, err, placement.ErrUnavailable, tier)
		require.ErrorContains(t, err, `placement "p3"`)
		_, err = e.prov.GetTenant(ctx, "down-"+string(tier))
		require.ErrorIs(t, err, registry.ErrNotFound, "nothing half-created")
	}
	require.ErrorIs(t, e.prov.DeleteTenant(ctx, "before"), placement.ErrUnavailable)
	tn, err := e.prov.GetTenant(ctx, "before")
	require.NoError(t, err)
	require.Equal(t, registry.StatusDeleting, tn.Status)

	srv.Start(t)
	require.NoError(t, e.prov.DeleteTenant(ctx, "before"))
	var exists bool
	require.NoError(t, superPool(t, srv, "postgres").QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, before.Tenant.DatabaseName).Scan(&exists))
	require.False(t, exists)
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "down-" + string(tier), Tier: tier, Placement: "p3"})
		require.NoError(t, err, tier)
	}
}
