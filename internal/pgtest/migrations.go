package pgtest

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/migrations/tenant"
)

// TenantMigrationsWith is the real tenant migrations plus extra (file name to SQL), for
// schema.MigratorConfig.TenantMigrations and provision.Config.TenantMigrations: tests and
// benchmarks that need a migration of a future release.
func TenantMigrationsWith(t testing.TB, extra map[string]string) fs.FS {
	t.Helper()
	m := fstest.MapFS{}
	names, err := fs.Glob(tenant.FS, "*.sql")
	require.NoError(t, err)
	for _, n := range names {
		b, err := fs.ReadFile(tenant.FS, n)
		require.NoError(t, err)
		m[n] = &fstest.MapFile{Data: b}
	}
	for n, sql := range extra {
		m[n] = &fstest.MapFile{Data: []byte(sql)}
	}
	return m
}
