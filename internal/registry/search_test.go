package registry

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/migrations/control"

	_ "github.com/jackc/pgx/v5/stdlib" // goose's *sql.DB
)

// fleet is a control schema (control migrations only) holding n shared-tier tenants
// "t/0000000".."t/<n-1>" plus a few named ones, analysed.
func fleet(tb testing.TB, n int) *pgxpool.Pool {
	tb.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(tb)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `CREATE SCHEMA tenantmem_control; CREATE EXTENSION IF NOT EXISTS pgcrypto`)
	require.NoError(tb, err)
	// sql.Open, not goose.OpenDBWithDriver: that one sets goose's global dialect, a data race
	// between parallel tests.
	db, err := sql.Open("pgx", url+"&search_path=tenantmem_control")
	require.NoError(tb, err)
	defer db.Close()
	prov, err := goose.NewProvider(goose.DialectPostgres, db, control.FS, goose.WithDisableGlobalRegistry(true),
		goose.WithTableName("tenantmem_control.goose_db_version"))
	require.NoError(tb, err)
	_, err = prov.Up(ctx)
	require.NoError(tb, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status)
		SELECT 't/' || lpad(i::text, 7, '0'), 'shared', 'tenantmem_shared', 'active' FROM generate_series(0, $1 - 1) i`, n)
	require.NoError(tb, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status) VALUES
		('acme', 'shared', 'tenantmem_shared', 'active'), ('acme/a', 'shared', 'tenantmem_shared', 'active'),
		('acme/b', 'shared', 'tenantmem_shared', 'active'), ('acme-x', 'shared', 'tenantmem_shared', 'active'),
		('acme0', 'shared', 'tenantmem_shared', 'active'), ('Acme', 'shared', 'tenantmem_shared', 'active');
		ANALYZE tenantmem_control.tenants`)
	require.NoError(tb, err)
	return pool
}

func ids(ts []Tenant) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

func TestSearchTenants(t *testing.T) {
	t.Parallel()
	pool := fleet(t, 1000)
	ctx := context.Background()
	for _, tc := range []struct {
		given  TenantSearchParams
		expect []string
	}{
		{TenantSearchParams{Prefix: "acme", Limit: 10}, []string{"acme", "acme-x", "acme/a", "acme/b", "acme0"}},
		{TenantSearchParams{Prefix: "acme/", Limit: 10}, []string{"acme/a", "acme/b"}},
		{TenantSearchParams{Prefix: "acme", After: "acme-x", Limit: 2}, []string{"acme/a", "acme/b"}},
		{TenantSearchParams{Prefix: "acme/", After: "acme/b", Limit: 10}, []string{}},
		{TenantSearchParams{Prefix: "", Limit: 3}, []string{"Acme", "acme", "acme-x"}},
		{TenantSearchParams{Prefix: "t/000099", Limit: 20}, []string{"t/0000990", "t/0000991", "t/0000992", "t/0000993",
			"t/0000994", "t/0000995", "t/0000996", "t/0000997", "t/0000998", "t/0000999"}},
		{TenantSearchParams{Prefix: "t/", After: "t/0000997", Limit: 20}, []string{"t/0000998", "t/0000999"}},
		{TenantSearchParams{Prefix: "zz", Limit: 5}, []string{}},
		{TenantSearchParams{Prefix: "ACME", Limit: 5}, []string{}},
	} {
		got, err := SearchTenants(ctx, pool, tc.given)
		require.NoError(t, err, "%+v", tc.given)
		require.Equal(t, tc.expect, ids(got), "%+v", tc.given)
	}
	_, err := SearchTenants(ctx, pool, TenantSearchParams{})
	require.ErrorContains(t, err, "limit")
}

// TestSearchTenantsPlan checks that every shape of the search reads one index range in order:
// no sequential scan and no sort, so the cost is the page, not the fleet.
func TestSearchTenantsPlan(t *testing.T) {
	t.Parallel()
	pool := fleet(t, 50000)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	// The generic plan is what a prepared statement runs after its first executions.
	_, err = conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	for _, p := range []TenantSearchParams{{Limit: 51}, {Prefix: "t/00123", Limit: 51}, {Prefix: "t/", After: "t/0049000", Limit: 51},
		{Prefix: "zzz", Limit: 51}} {
		lower := max(p.Prefix, p.After)
		var upper *string
		if s, ok := prefixSuccessor(p.Prefix); ok {
			upper = &s
		}
		rows, err := conn.Query(ctx, "EXPLAIN "+searchTenantsSQL, lower, p.After, upper, p.Limit)
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		plan := strings.Join(lines, "\n")
		require.Contains(t, plan, "Index Scan using tenants_id_bytes_idx", plan)
		require.NotContains(t, plan, "Seq Scan", plan)
		require.NotContains(t, plan, "Sort", plan)
	}
}

func TestPrefixSuccessor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given, expect string
		ok            bool
	}{
		{"acme", "acmf", true}, {"acme/", "acme0", true}, {"a", "b", true}, {"", "", false},
		{"a\xff", "b", true}, {"\xff\xff", "", false},
	} {
		got, ok := prefixSuccessor(tc.given)
		require.Equal(t, tc.ok, ok, "%q", tc.given)
		require.Equal(t, tc.expect, got, "%q", tc.given)
	}
}

// BenchmarkSearchTenants1M reads console pages of 51 tenants out of a registry of a million.
func BenchmarkSearchTenants1M(b *testing.B) {
	pool := fleet(b, 1_000_000)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		p    TenantSearchParams
	}{
		{"first-page", TenantSearchParams{Limit: 51}},
		{"deep-page", TenantSearchParams{After: "t/0987654", Limit: 51}},
		{"prefix", TenantSearchParams{Prefix: "t/04321", Limit: 51}},
		{"prefix-deep-page", TenantSearchParams{Prefix: "t/", After: "t/0765432", Limit: 51}},
		{"prefix-no-match", TenantSearchParams{Prefix: "nobody/", Limit: 51}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportMetric(float64(pageBuffers(b, pool, bc.p)), "buffers/page")
			for b.Loop() {
				if _, err := SearchTenants(ctx, pool, bc.p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// pageBuffers is the number of shared buffers (8 KiB pages, hit or read) one search touches:
// the figure that shows its cost does not grow with the fleet, free of the machine's noise.
func pageBuffers(b *testing.B, pool *pgxpool.Pool, p TenantSearchParams) int {
	b.Helper()
	lower := max(p.Prefix, p.After)
	var upper *string
	if s, ok := prefixSuccessor(p.Prefix); ok {
		upper = &s
	}
	var plan []map[string]map[string]any
	err := pool.QueryRow(context.Background(), "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+searchTenantsSQL,
		lower, p.After, upper, p.Limit).Scan(&plan)
	require.NoError(b, err)
	top := plan[0]["Plan"]
	return int(top["Shared Hit Blocks"].(float64) + top["Shared Read Blocks"].(float64))
}
