package schema_test

import (
	"context"
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/schema"
	"github.com/tenantmem/tenantmem/migrations/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newMigrator(t *testing.T, dim int) (*schema.Migrator, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	cc, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	conn, err := pgx.ConnectConfig(ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, `CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions`)
	require.NoError(t, err)
	m, err := schema.NewMigrator(schema.MigratorConfig{ConnConfig: cc, EmbeddingDimension: dim})
	require.NoError(t, err)
	return m, conn
}

func TestMigratorRunsSchemasInParallelAndEachOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, conn := newMigrator(t, 8)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	require.Positive(t, latest)

	// Four schemas, each migrated by three goroutines at once: every call succeeds and every schema
	// ends at the latest version with each migration applied exactly once.
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 4 {
		name := fmt.Sprintf("tenant_p%d", i)
		_, err := conn.Exec(ctx, "CREATE SCHEMA "+name)
		require.NoError(t, err)
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := m.Up(ctx, schema.TenantSet, name)
				if err == nil && v != latest {
					err = fmt.Errorf("%s at %d, want %d", name, v, latest)
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range 4 {
		name := fmt.Sprintf("tenant_p%d", i)
		var applied int64
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM `+name+`.goose_db_version WHERE version_id > 0`).Scan(&applied))
		// Versions are numbered with gaps (numbers are reserved per issue): count the files.
		files, err := fs.Glob(tenant.FS, "*.sql")
		require.NoError(t, err)
		require.EqualValues(t, len(files), applied)
		v, err := m.Version(ctx, schema.TenantSet, name)
		require.NoError(t, err)
		require.Equal(t, latest, v)
		var typ string
		require.NoError(t, conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
			WHERE attrelid = $1::regclass AND attname = 'embedding'`, name+".chunks").Scan(&typ))
		require.Equal(t, "extensions.vector(8)", typ)
	}
	// Nothing landed outside the migrated schemas.
	var stray int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&stray))
	require.Zero(t, stray)
}

func TestMigratorNeedsTheDimension(t *testing.T) {
	t.Parallel()
	m, conn := newMigrator(t, 0)
	_, err := conn.Exec(context.Background(), "CREATE SCHEMA tenant_x")
	require.NoError(t, err)
	_, err = m.Up(context.Background(), schema.TenantSet, "tenant_x")
	require.ErrorContains(t, err, "EmbeddingDimension")
}

func TestLockIDDiffersPerSchema(t *testing.T) {
	t.Parallel()
	seen := map[int64]string{}
	for i := range 10000 {
		name := fmt.Sprintf("tenant_%d", i)
		id := schema.LockID(name)
		if prev, ok := seen[id]; ok {
			t.Fatalf("%s and %s share lock %d", prev, name, id)
		}
		seen[id] = name
	}
}
