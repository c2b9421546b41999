package provision_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkProvisioning provisions TENANTMEM_BENCH_SCHEMA_TENANTS (default 1,000) schema-tier and
// TENANTMEM_BENCH_SHARED_TENANTS (default 10,000) shared-tier tenants with
// TENANTMEM_BENCH_WORKERS (default 4) concurrent creators, then runs a no-op Migrate over them.
// Run it once: go test -run '^$' -bench Provisioning -benchtime 1x ./internal/provision
func BenchmarkProvisioning(b *testing.B) {
	schemaN := envInt("TENANTMEM_BENCH_SCHEMA_TENANTS", 1000)
	sharedN := envInt("TENANTMEM_BENCH_SHARED_TENANTS", 10000)
	workers := envInt("TENANTMEM_BENCH_WORKERS", 4)
	ctx := context.Background()
	for range b.N {
		url := pgtest.NewDatabase(b)
		cfg, err := pgxpool.ParseConfig(url)
		require.NoError(b, err)
		cfg.MaxConns = int32(2*workers + 4)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(b, err)
		prov, err := provision.New(provision.Config{Pool: pool, Parallelism: workers})
		require.NoError(b, err)
		_, err = prov.Init(ctx, provision.InitParams{})
		require.NoError(b, err)

		create := func(n int, tier registry.Tier) float64 {
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(n) {
							return
						}
						_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("%s-%06d", tier, i), Tier: tier})
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			return float64(n) / time.Since(start).Seconds()
		}
		b.ReportMetric(create(schemaN, registry.TierSchema), "schema_tenants/s")
		b.ReportMetric(create(sharedN, registry.TierShared), "shared_tenants/s")

		rep, err := prov.Migrate(ctx, provision.MigrateParams{})
		require.NoError(b, err)
		require.Empty(b, rep.Failed)
		require.Zero(b, rep.Applied)
		require.Equal(b, schemaN+1, rep.Schemas)
		b.ReportMetric(rep.Took.Seconds(), "noop_migrate_s")
		pool.Close()
	}
}

// BenchmarkDatabaseTierCreation creates TENANTMEM_BENCH_DATABASE_TENANTS (default 100)
// database-tier tenants with TENANTMEM_BENCH_WORKERS (default 4) concurrent creators on the local
// placement (each: registry row, CREATE DATABASE from template0, the extension, grants, the tenant
// migrations, activation, key), then a no-op Migrate over them, then deletes them all.
// Run it once: go test -run '^$' -bench DatabaseTierCreation -benchtime 1x ./internal/provision
func BenchmarkDatabaseTierCreation(b *testing.B) {
	n := envInt("TENANTMEM_BENCH_DATABASE_TENANTS", 100)
	workers := envInt("TENANTMEM_BENCH_WORKERS", 4)
	ctx := context.Background()
	for range b.N {
		url := pgtest.NewDatabase(b)
		cfg, err := pgxpool.ParseConfig(url)
		require.NoError(b, err)
		cfg.MaxConns = int32(2*workers + 4)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(b, err)
		prov, err := provision.New(provision.Config{Pool: pool, Parallelism: workers})
		require.NoError(b, err)
		_, err = prov.Init(ctx, provision.InitParams{})
		require.NoError(b, err)
		s, err := registry.GetSettings(ctx, pool)
		require.NoError(b, err)
		pgtest.DropDatabasesOnCleanup(b, pgtest.ServerURL(), "tenantmem deployment "+s.DeploymentID+" ")

		run := func(op func(i int) error) time.Duration {
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(n) {
							return
						}
						if err := op(int(i)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			return time.Since(start)
		}
		id := func(i int) string { return fmt.Sprintf("db-%06d", i) }
		took := run(func(i int) error {
			_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id(i), Tier: registry.TierDatabase})
			return err
		})
		b.ReportMetric(float64(n)/took.Seconds(), "database_tenants/s")
		b.ReportMetric(float64(took.Milliseconds())*float64(workers)/float64(n), "ms/tenant/worker")

		rep, err := prov.Migrate(ctx, provision.MigrateParams{})
		require.NoError(b, err)
		require.Empty(b, rep.Failed)
		require.Zero(b, rep.Applied)
		b.ReportMetric(rep.Took.Seconds(), "noop_migrate_s")

		took = run(func(i int) error { return prov.DeleteTenant(ctx, id(i)) })
		b.ReportMetric(float64(n)/took.Seconds(), "deletes/s")
		prov.Close()
		pool.Close()
	}
}

// BenchmarkTierFootprint measures what an empty tenant of each tier adds to the server's disk:
// the growth of the database per schema-tier tenant (its catalog rows and empty tables and
// indexes) over TENANTMEM_BENCH_FOOTPRINT_TENANTS (default 50) tenants, and the size of a
// database-tier tenant's database.
// Run it once: go test -run '^$' -bench TierFootprint -benchtime 1x ./internal/provision
func BenchmarkTierFootprint(b *testing.B) {
	n := envInt("TENANTMEM_BENCH_FOOTPRINT_TENANTS", 50)
	ctx := context.Background()
	for range b.N {
		url := pgtest.NewDatabase(b)
		pool, err := pgxpool.New(ctx, url)
		require.NoError(b, err)
		prov, err := provision.New(provision.Config{Pool: pool})
		require.NoError(b, err)
		_, err = prov.Init(ctx, provision.InitParams{})
		require.NoError(b, err)
		s, err := registry.GetSettings(ctx, pool)
		require.NoError(b, err)
		pgtest.DropDatabasesOnCleanup(b, pgtest.ServerURL(), "tenantmem deployment "+s.DeploymentID+" ")
		size := func() int64 {
			var v int64
			_, err := pool.Exec(ctx, `CHECKPOINT`)
			require.NoError(b, err)
			require.NoError(b, pool.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&v))
			return v
		}
		before := size()
		for i := range n {
			_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("s%d", i), Tier: registry.TierSchema})
			require.NoError(b, err)
		}
		b.ReportMetric(float64(size()-before)/float64(n)/1024, "schema_tenant_KiB")
		before = size()
		for i := range n {
			_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("sh%d", i), Tier: registry.TierShared})
			require.NoError(b, err)
		}
		b.ReportMetric(float64(size()-before)/float64(n)/1024, "shared_tenant_KiB")
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "d", Tier: registry.TierDatabase})
		require.NoError(b, err)
		var dbSize int64
		require.NoError(b, pool.QueryRow(ctx, `SELECT pg_database_size($1)`, res.Tenant.DatabaseName).Scan(&dbSize))
		b.ReportMetric(float64(dbSize)/1024/1024, "database_tenant_MiB")
		prov.Close()
		pool.Close()
	}
}

// BenchmarkCreateBesideAFleet measures what one tenant's creation costs beside many registered
// tenants (issue 12: the cost must not grow with the fleet). For each fleet size in
// TENANTMEM_BENCH_FLEETS (default "0,100000"), it registers that many shared-tier tenants in bulk,
// then creates TENANTMEM_BENCH_CREATES (default 200) shared-tier and a tenth as many schema-tier
// tenants one after the other, and reports each tier's mean creation time.
//
//	go test -run '^$' -bench CreateBesideAFleet -benchtime 1x ./internal/provision
func BenchmarkCreateBesideAFleet(b *testing.B) {
	fleets := []int{0, 100000}
	if v := os.Getenv("TENANTMEM_BENCH_FLEETS"); v != "" {
		fleets = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(b, err)
			fleets = append(fleets, n)
		}
	}
	creates := envInt("TENANTMEM_BENCH_CREATES", 200)
	ctx := context.Background()
	for _, fleet := range fleets {
		b.Run(fmt.Sprintf("fleet=%d", fleet), func(b *testing.B) {
			for range b.N {
				pool, err := pgxpool.New(ctx, pgtest.NewDatabase(b))
				require.NoError(b, err)
				prov, err := provision.New(provision.Config{Pool: pool})
				require.NoError(b, err)
				_, err = prov.Init(ctx, provision.InitParams{})
				require.NoError(b, err)
				if fleet > 0 {
					ids := make([]string, fleet)
					for i := range ids {
						ids[i] = fmt.Sprintf("fleet-%07d", i)
					}
					_, err = prov.CreateTenants(ctx, provision.TenantBulkCreateParams{IDs: ids, Tier: registry.TierShared})
					require.NoError(b, err)
					_, err = pool.Exec(ctx, `VACUUM ANALYZE tenantmem_control.tenants, tenantmem_control.api_keys, tenantmem_control.audit_log`)
					require.NoError(b, err)
				}
				for _, tc := range []struct {
					tier registry.Tier
					n    int
				}{{registry.TierShared, creates}, {registry.TierSchema, max(1, creates/10)}} {
					start := time.Now()
					for i := range tc.n {
						_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("new-%s-%04d", tc.tier, i), Tier: tc.tier})
						require.NoError(b, err)
					}
					mean := time.Since(start) / time.Duration(tc.n)
					b.ReportMetric(float64(mean.Microseconds())/1000, string(tc.tier)+"_create_ms")
				}
				prov.Close()
				pool.Close()
			}
		})
	}
}
