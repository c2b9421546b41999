package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// hnswScans is the number of scans of the shared schema's HNSW index so far (the statistics are
// flushed asynchronously, so callers poll).
func hnswScans(t *testing.T, e *env) int64 {
	t.Helper()
	var n int64
	require.NoError(t, e.admin.QueryRow(context.Background(), `SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes
		WHERE schemaname = 'tenantmem_shared' AND indexrelname = 'chunks_embedding_hnsw_idx'`).Scan(&n))
	return n
}

// TestBigSharedTenantKeepsTheIndex: a shared-tier tenant above the exact-scan threshold keeps
// walking the HNSW index on a connection that ran the search many times. Before the fix the
// prepared vector statement switched to a generic plan after five executions, which scanned the
// tenant's rows through the owner index instead.
func TestBigSharedTenantKeepsTheIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	big := e.tenant(t, registry.TierShared)
	l := newLoader(t, e, big.Schema)
	r := rand.New(rand.NewPCG(3, 4))
	vec := func() []float32 {
		v := make([]float32, testDim)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	// The big tenant and 200 small ones: planned for an unknown owner (a generic plan), the
	// owner's rows look few, and sorting them looks cheaper than walking the graph.
	owners := map[string]int{big.OwnerID: 4000}
	for i := range 200 {
		owners[fmt.Sprintf("small-%d", i)] = 20
	}
	for owner, n := range owners {
		for done := 0; done < n; done += 20 {
			texts, vecs := make([]string, 20), make([][]float32, 20)
			for i := range texts {
				texts[i], vecs[i] = fmt.Sprintf("chunk %d", done+i), vec()
			}
			l.add(owner, texts, vecs)
		}
	}
	l.load(t)

	// One connection, so the same session runs every search.
	cfg, err := pgxpool.ParseConfig(pgtest.WithUser(t, e.url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	big.Pool = pool
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.ExactSearchThreshold = 1000 })

	before := hnswScans(t, e)
	const searches = 30
	for range searches {
		res, err := eng.Search(ctx, big, memory.SearchParams{QueryEmbedding: vec(), SearchType: memory.SearchVector})
		require.NoError(t, err)
		require.Len(t, res.Results, 10)
	}
	waitFor(t, 10*time.Second, "every search to scan the HNSW index", func() bool {
		return hnswScans(t, e)-before >= searches
	})
}

// TestSearchSurvivesHistoryFailure: a search whose history record cannot be written still
// answers; the record is counted as dropped. Before the fix the history insert ran in the
// search's transaction and its failure failed the search.
func TestSearchSurvivesHistoryFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text",
				Content: "the history table refuses every row today"})
			require.NoError(t, err)
			_, err = e.admin.Exec(ctx, `ALTER TABLE `+quoteIdent(s.Schema)+`.search_history
				ADD CONSTRAINT refuse_all CHECK (false) NOT VALID`)
			require.NoError(t, err)
			t.Cleanup(func() {
				_, _ = e.admin.Exec(context.Background(), `ALTER TABLE `+quoteIdent(s.Schema)+`.search_history DROP CONSTRAINT refuse_all`)
			})
			dropped := eng.HistoryStats().Dropped
			for _, mode := range modes {
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "history rows", SearchType: mode})
				require.NoError(t, err, mode)
				require.NotEmpty(t, res.Results, mode)
			}
			require.GreaterOrEqual(t, eng.HistoryStats().Dropped, dropped+uint64(len(modes)))
		})
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// TestSearchIDsArePerTenant: a shared-tier tenant's search ids follow one another whatever other
// tenants search meanwhile. Before the fix they came from one sequence of the shared schema, so
// the gaps counted the other tenants' searches.
func TestSearchIDsArePerTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.AsyncHistory = async })
			a, b := e.tenant(t, registry.TierShared), e.tenant(t, registry.TierShared)
			for _, s := range []memory.Scope{a, b, b, b, b, b, a, b, a} {
				_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "anything at all", SearchType: memory.SearchText})
				require.NoError(t, err)
			}
			hist, err := eng.SearchHistory(ctx, a, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			require.Len(t, hist, 3)
			require.Equal(t, []int64{3, 2, 1}, []int64{hist[0].SearchID, hist[1].SearchID, hist[2].SearchID},
				"a tenant's ids count only its own searches")
			hb, err := eng.SearchHistory(ctx, b, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			require.Len(t, hb, 6)
			require.Equal(t, int64(6), hb[0].SearchID)
		})
	}
}
