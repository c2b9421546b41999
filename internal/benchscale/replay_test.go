package benchscale_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// BenchmarkCreateVersusReplay separates what tenantmem adds to a schema-tier creation from what
// PostgreSQL's own DDL costs as the catalogs grow. It takes the schema of one created tenant as
// pg_dump --schema-only writes it (the same tables, indexes, functions, triggers, policies and
// grants, in their final form) and, bucket by bucket, creates half of each bucket through
// Provisioner.CreateTenant and replays that DDL for the other half under new schema and function
// names (the same 4 concurrent workers, a fresh connection per schema as the migrator uses), so
// both see the same catalog size and the same machine. TENANTMEM_BENCH_REPLAY_SCHEMAS (0: skip;
// 10,000 took 13 minutes on 2 cores) and TENANTMEM_SCALE_BUCKET (1,000). docs/benchmarks.md,
// "Fleet scale".
func BenchmarkCreateVersusReplay(b *testing.B) {
	n := knob("TENANTMEM_BENCH_REPLAY_SCHEMAS", 0)
	if n == 0 {
		b.Skip("set TENANTMEM_BENCH_REPLAY_SCHEMAS (e.g. 4000) to run it")
	}
	bucket := knob("TENANTMEM_SCALE_BUCKET", 1000)
	workers := knob("TENANTMEM_SCALE_WORKERS", 4)
	for range b.N {
		s := newScale(b, workers)
		res, err := s.prov.CreateTenant(s.ctx, provision.TenantCreateParams{ID: "model", Tier: registry.TierSchema})
		require.NoError(b, err)
		ddl := dumpSchema(b, s.url, res.Tenant.SchemaName)
		var oid uint32
		require.NoError(b, s.pool.QueryRow(s.ctx, `SELECT oid FROM pg_namespace WHERE nspname = $1`, res.Tenant.SchemaName).Scan(&oid))
		// Function names carry the schema's oid (tenant migration 00012): give each copy its own.
		suffix := regexp.MustCompile(fmt.Sprintf(`_%d\b`, oid))
		schemaName := regexp.MustCompile(`\b` + regexp.QuoteMeta(res.Tenant.SchemaName) + `\b`)
		replay := func(i int) error {
			sql := schemaName.ReplaceAllString(ddl, fmt.Sprintf("tenant_replay_%06d", i))
			sql = suffix.ReplaceAllString(sql, fmt.Sprintf("_r%d", i))
			conn, err := pgx.Connect(s.ctx, s.url)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(s.ctx))
			_, err = conn.Exec(s.ctx, sql) // no arguments: the simple protocol, many statements
			return err
		}
		create := func(i int) error {
			_, err := s.prov.CreateTenant(s.ctx, provision.TenantCreateParams{ID: fmt.Sprintf("c%06d", i), Tier: registry.TierSchema})
			return err
		}
		var firstCreate, firstReplay, lastCreate, lastReplay float64
		for lo := 0; lo < n; lo += bucket {
			half := min(bucket, n-lo) / 2
			for _, way := range []struct {
				name  string
				fn    func(int) error
				first *float64
				last  *float64
			}{{"tenantmem create", create, &firstCreate, &lastCreate}, {"DDL replay", replay, &firstReplay, &lastReplay}} {
				rate, cpu := s.run(lo, half, way.fn)
				if lo == 0 {
					*way.first = rate
				}
				*way.last = rate
				s.report("%-16s schemas %5d-%5d: %5.1f /s, server CPU %.0f ms each", way.name, lo, lo+2*half, rate, cpu)
			}
		}
		s.report("last bucket at %.0f%% of the first's rate: tenantmem create, %.0f%%: DDL replay",
			100*lastCreate/firstCreate, 100*lastReplay/firstReplay)
	}
}

// dumpSchema returns pg_dump --schema-only of one schema.
func dumpSchema(b *testing.B, url, schemaName string) string {
	bin, err := pgcluster.FindBinDir("")
	require.NoError(b, err)
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--schema-only", "--no-comments", "-n", schemaName, "-d", url).Output()
	require.NoError(b, err)
	require.Contains(b, string(out), "CREATE TABLE "+schemaName+".chunks")
	// psql meta-commands (\restrict and \unrestrict of newer pg_dump releases) are not SQL.
	var sql []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "\\") {
			sql = append(sql, l)
		}
	}
	return strings.Join(sql, "\n")
}
