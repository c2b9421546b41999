package schema_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// BenchmarkUpgradeToUniqueFunctionNames measures what upgrading a fleet created before tenant
// migration 00012 costs: TENANTMEM_BENCH_UPGRADE_SCHEMAS schemas (default 200) are migrated to
// 00011, then to the latest with 4 workers, as `migrate --parallelism 4` would. Every schema's
// upgrade looks up ten function names whose catalog cache lists still hold every schema not yet
// upgraded, so the cost grows with the square of the fleet (docs/scaling.md).
func BenchmarkUpgradeToUniqueFunctionNames(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("TENANTMEM_BENCH_UPGRADE_SCHEMAS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	for range b.N {
		url := pgtest.NewDatabase(b)
		cc, err := pgx.ParseConfig(url)
		require.NoError(b, err)
		conn, err := pgxpool.New(ctx, url)
		require.NoError(b, err)
		_, err = conn.Exec(ctx, `CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions`)
		require.NoError(b, err)
		m, err := schema.NewMigrator(schema.MigratorConfig{ConnConfig: cc, EmbeddingDimension: 8})
		require.NoError(b, err)
		run := func(fn func(name string) error) time.Duration {
			start := time.Now()
			work := make(chan string)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for name := range work {
						errs <- fn(name)
					}
				})
			}
			for i := range n {
				work <- fmt.Sprintf("tenant_u%05d", i)
			}
			close(work)
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(b, err)
			}
			return time.Since(start)
		}
		took := run(func(name string) error {
			if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
				return err
			}
			_, err := m.UpTo(ctx, schema.TenantSet, name, 11)
			return err
		})
		b.Logf("%d schemas created at version 11 in %s", n, took.Round(time.Millisecond))
		took = run(func(name string) error {
			_, err := m.Up(ctx, schema.TenantSet, name)
			return err
		})
		b.ReportMetric(took.Seconds(), "upgrade_s")
		b.ReportMetric(float64(n)/took.Seconds(), "schemas/s")
		b.Logf("%d schemas upgraded to the latest version in %s (%.1f schemas/s)", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
		conn.Close()
	}
}
