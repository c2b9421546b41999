package provision_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// TestTenantTablesListIsComplete compares schema.TenantTables with what the tenant migrations
// create: a migration that adds a table must list it (so backups, restores, moves and deletes
// know it), and every data table carries the change capture triggers a move relies on, with row
// level security forced on every table.
func TestTenantTablesListIsComplete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	rows, err := e.pool.Query(ctx, `SELECT c.relname, c.relforcerowsecurity,
			(SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname LIKE 'tenantmem_capture_%')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname <> $2 ORDER BY c.relname`, schema.SharedSchema, schema.VersionTable)
	require.NoError(t, err)
	type table struct {
		name     string
		forced   bool
		triggers int
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var tb table
		err := r.Scan(&tb.name, &tb.forced, &tb.triggers)
		return tb, err
	})
	require.NoError(t, err)
	var names []string
	for _, tb := range got {
		names = append(names, tb.name)
		require.True(t, tb.forced, "%s: row level security is forced", tb.name)
		i := slices.IndexFunc(schema.TenantTables, func(tt schema.TenantTable) bool { return tt.Name == tb.name })
		switch {
		case tb.name == schema.ChangeCaptureTable || tb.name == schema.ChangeLogTable:
			require.Zero(t, tb.triggers, tb.name)
		case i < 0:
			t.Errorf("table %s is not in schema.TenantTables: add it (TableData, or TableDerived if triggers fill it)", tb.name)
		case schema.TenantTables[i].Kind == schema.TableData:
			require.Equal(t, 3, tb.triggers, "%s: a data table has the capture triggers (tenantmem_capture_changes)", tb.name)
		default:
			require.Zero(t, tb.triggers, "%s: a derived table is rebuilt, not captured", tb.name)
		}
	}
	for _, tt := range schema.TenantTables {
		require.Contains(t, names, tt.Name, "schema.TenantTables lists a table the migrations do not create")
	}
}

// TestChangeCaptureIsPerTenant proves, as the router role in the shared tier, that one tenant's
// move captures and pauses only that tenant: its neighbour cannot read, plant or lift its capture
// state, is not logged, and keeps writing while it is paused.
func TestChangeCaptureIsPerTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	var a, b registry.Tenant
	for _, id := range []string{"cap-a", "cap-b"} {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierShared})
		require.NoError(t, err)
		if id == "cap-a" {
			a = res.Tenant
		} else {
			b = res.Tenant
		}
	}
	// A is being moved: capture on, as the provisioner does it (owner role, A's scope).
	require.NoError(t, pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL ROLE tenantmem_owner; SELECT set_config('tenantmem.owner_id', 'cap-a', true)`)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `INSERT INTO tenantmem_shared.tenant_change_capture (owner_id) VALUES ('cap-a') ON CONFLICT DO NOTHING`)
		return err
	}))
	insertDocument(t, e.router, a, "a's write, logged")
	insertDocument(t, e.router, b, "b's write, not logged")

	// B sees nothing of A's capture, cannot plant or lift it.
	require.NoError(t, inTenant(t, e.router, b, func(tx pgx.Tx) error {
		var n int
		require.NoError(t, tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenant_change_capture) + (SELECT count(*) FROM tenant_change_log)`).Scan(&n))
		require.Zero(t, n)
		tag, err := tx.Exec(ctx, `DELETE FROM tenant_change_capture WHERE owner_id = 'cap-a'`)
		require.NoError(t, err)
		require.Zero(t, tag.RowsAffected())
		return nil
	}))
	err := inTenant(t, e.router, b, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenant_change_capture (owner_id, writes_paused) VALUES ('cap-a', true)`)
		return err
	})
	requireCode(t, err, pgerrcode.InsufficientPrivilege)
	err = inTenant(t, e.router, b, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenant_change_log (owner_id, table_name, row_key) VALUES ('cap-a', 'documents', '{x}')`)
		return err
	})
	requireCode(t, err, pgerrcode.InsufficientPrivilege)

	// A's log has its own write only.
	require.NoError(t, inTenant(t, e.router, a, func(tx pgx.Tx) error {
		var tables []string
		rows, err := tx.Query(ctx, `SELECT DISTINCT table_name FROM tenant_change_log ORDER BY 1`)
		require.NoError(t, err)
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"documents"}, tables)
		return nil
	}))

	// Paused: A's writes are refused with TM503, B's go on.
	require.NoError(t, pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL ROLE tenantmem_owner; SELECT set_config('tenantmem.owner_id', 'cap-a', true)`)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE tenantmem_shared.tenant_change_capture SET writes_paused = true`)
		return err
	}))
	err = inTenant(t, e.router, a, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO documents (owner_id, document_name, document_type) VALUES ('cap-a', 'refused', 'text')`)
		return err
	})
	requireCode(t, err, "TM503")
	insertDocument(t, e.router, b, "b writes while a is paused")
}

// TestTenantFunctionNamesAreUnique: no function or operator of a tenant schema shares its name
// with one of another tenant schema (tenant migration 00012). PostgreSQL resolves a function or
// operator name through a catalog cache list of every object of that name in the database, and
// every backend rebuilds the list after any function changes anywhere: with the same names in
// every schema, creating a tenant cost more with each schema already there (42-62 ms per name
// lookup at 5,200 schemas). A migration that adds a function must name it after the schema.
func TestTenantFunctionNamesAreUnique(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	for _, id := range []string{"fn-a", "fn-b", "fn-c"} {
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierSchema})
		require.NoError(t, err)
	}
	var schemas []string
	err := e.pool.QueryRow(ctx, `SELECT array_agg(schema_name) FROM tenantmem_control.tenants WHERE schema_name IS NOT NULL`).Scan(&schemas)
	require.NoError(t, err)
	require.Len(t, schemas, 3)
	schemas = append(schemas, schema.SharedSchema)
	for _, catalog := range []struct{ table, name, namespace string }{
		{"pg_proc", "proname", "pronamespace"},
		{"pg_operator", "oprname", "oprnamespace"},
	} {
		rows, err := e.pool.Query(ctx, `SELECT o.`+catalog.name+`::text, count(DISTINCT n.nspname)
			FROM `+catalog.table+` o JOIN pg_namespace n ON n.oid = o.`+catalog.namespace+`
			WHERE n.nspname = ANY($1) GROUP BY 1 HAVING count(DISTINCT n.nspname) > 1 ORDER BY 1`, schemas)
		require.NoError(t, err)
		shared, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var name string
			var n int
			err := r.Scan(&name, &n)
			return fmt.Sprintf("%s (%d schemas)", name, n), err
		})
		require.NoError(t, err)
		require.Empty(t, shared, "%s: names held by more than one of %v", catalog.table, schemas)
	}
	// Each schema still has its chunk triggers and capture triggers, on functions of its own.
	var wrong []string
	err = e.pool.QueryRow(ctx, `SELECT coalesce(array_agg(format('%s.%s -> %s', n.nspname, g.tgname, f.oid::regprocedure)), '{}')
		FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_proc f ON f.oid = g.tgfoid
		WHERE n.nspname = ANY($1) AND NOT g.tgisinternal AND f.pronamespace <> n.oid`, schemas).Scan(&wrong)
	require.NoError(t, err)
	require.Empty(t, wrong, "a trigger runs a function of another schema")
	var triggers int
	err = e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = ANY($1) AND g.tgname IN ('chunk_terms_insert', 'chunk_terms_delete')`, schemas).Scan(&triggers)
	require.NoError(t, err)
	require.Equal(t, 2*len(schemas), triggers)
}
