package benchscale_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// BenchmarkBackendMemoryPerSchema measures what one schema-tier tenant costs a router backend
// that serves it: a router with one connection and no recycling serves TENANTMEM_SCALE_MEMORY_SCHEMAS
// (300) schema-tier tenants, each with one document, a request mix per tenant (an ingest, a hybrid
// search, a list, the statistics), and the backend's private memory (RssAnon) is read before and
// after. docs/scaling.md derives the schema recycle limit from it.
func BenchmarkBackendMemoryPerSchema(b *testing.B) {
	n := knob("TENANTMEM_SCALE_MEMORY_SCHEMAS", 300)
	for range b.N {
		s := newScale(b, 4)
		keys := make([]string, n)
		for i := range keys {
			res, err := s.prov.CreateTenant(s.ctx, provision.TenantCreateParams{ID: fmt.Sprintf("m%05d", i), Tier: registry.TierSchema})
			require.NoError(b, err)
			keys[i] = res.Key.Key
		}
		svcCfg := -1
		r := s.startRouterConns(svcCfg, 1)
		pid := func() int {
			var pid int
			require.NoError(b, s.pool.QueryRow(s.ctx, `SELECT pid FROM pg_stat_activity WHERE usename = $1
				AND datname = current_database() AND backend_type = 'client backend' AND query NOT ILIKE 'LISTEN%'
				ORDER BY backend_start DESC LIMIT 1`, provision.DefaultRouterRole).Scan(&pid))
			return pid
		}
		// One tenant first, so the backend has its baseline of shared catalogs.
		mix := func(key string, i int) {
			for _, c := range []struct {
				method, path string
				body         any
			}{
				{http.MethodPost, "/v1/documents", map[string]string{"document_name": "d", "document_type": "text", "content": text(i, 200)}},
				{http.MethodPost, "/v1/search", map[string]any{"query_text": query(i)}},
				{http.MethodGet, "/v1/documents", nil},
				{http.MethodGet, "/v1/statistics", nil},
			} {
				code, err := r.call(key, c.method, c.path, c.body)
				require.NoError(b, err)
				require.Less(b, code, 300, c.path)
			}
		}
		mix(keys[0], 0)
		p := pid()
		base := pgtest.ProcStatus(p, "RssAnon")
		for i, k := range keys[1:] {
			mix(k, i+1)
		}
		require.Equal(b, p, pid(), "one backend served every tenant")
		after := pgtest.ProcStatus(p, "RssAnon")
		perSchema := float64(after-base) / float64(n-1)
		fmt.Printf("backend RssAnon: %d MB after 1 schema, %d MB after %d: %.0f KB per schema (ingest, hybrid search, list, statistics)\n",
			base>>20, after>>20, n, perSchema/1024)
		b.ReportMetric(perSchema, "bytes/schema")
		r.stop(b)
	}
}
