package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
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
	pool := oneRouterConn(t, e)
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

// preparedSearches lists the search statements prepared on the one connection of pool:
// statement text, generic and custom plans made so far.
func preparedSearches(t *testing.T, pool *pgxpool.Pool) (stmts []string, generic, custom []int64) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements
		WHERE name LIKE 'tmc\_%' ORDER BY name`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var (
			s    string
			g, c int64
		)
		require.NoError(t, rows.Scan(&s, &g, &c))
		stmts, generic, custom = append(stmts, s), append(generic, g), append(custom, c)
	}
	require.NoError(t, rows.Err())
	return stmts, generic, custom
}

// TestPreparedSearchesStayPerTenant: search statements prepared on a connection (the second
// time it runs them) answer exactly what the unprepared first run answered, for each tenant of
// both tiers interleaved on one connection as the router role; a connection keeps at most
// Config.PreparedSearches of them; the text leg runs a generic plan and the vector leg a custom
// plan every time.
func TestPreparedSearchesStayPerTenant(t *testing.T) {
	t.Parallel()
	for _, size := range []int{2, memory.DefaultPreparedSearches} {
		t.Run(fmt.Sprintf("prepared=%d", size), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			pool := oneRouterConn(t, e)
			eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.PreparedSearches = size })

			var scopes []memory.Scope
			for i := range 4 {
				s := e.tenant(t, tiers[i%2])
				for d := range 3 {
					_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprint(d), DocumentType: "text",
						Content: fmt.Sprintf("Tenant %s keeps notes about routers and latency, document %d of %d.", s.OwnerID, d, i)})
					require.NoError(t, err)
				}
				s.Pool = pool
				scopes = append(scopes, s)
			}
			modes := []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid}
			first := map[string][]memory.SearchResult{}
			for round := range 4 {
				for _, s := range scopes {
					for _, mode := range modes {
						res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "routers latency notes", SearchType: mode})
						require.NoError(t, err)
						require.NotEmpty(t, res.Results, "%s %s", s.OwnerID, mode)
						for _, r := range res.Results {
							require.Contains(t, r.Content, "Tenant "+s.OwnerID+" ", "another tenant's chunk in %s's %s search", s.OwnerID, mode)
						}
						key := s.OwnerID + "/" + mode
						if round == 0 {
							first[key] = res.Results
							continue
						}
						require.Len(t, res.Results, len(first[key]), key)
						for i, r := range res.Results {
							require.Equal(t, first[key][i].ChunkID, r.ChunkID, key)
							require.InDelta(t, first[key][i].Score, r.Score, 1e-9, key)
						}
					}
				}
			}
			stmts, generic, custom := preparedSearches(t, pool)
			require.NotEmpty(t, stmts)
			require.LessOrEqual(t, len(stmts), size)
			if size == memory.DefaultPreparedSearches {
				// Per schema (the shared one and two of the schema tier): the vector leg (the
				// same statement in vector and hybrid search), the text leg, and hybrid's text
				// leg (it also reads the similarity).
				require.Equal(t, 3*3, len(stmts))
			}
			for i, s := range stmts {
				if strings.Contains(s, "chunk_terms") {
					require.Zero(t, custom[i], "the text leg is planned once: %s", s)
				} else {
					require.Zero(t, generic[i], "the vector leg is planned with its parameters: %s", s)
					require.Positive(t, custom[i])
				}
			}
		})
	}
}

// TestPreparedSearchOfAGoneTenantIsFenced: when the tenant's schema is dropped after its search
// statements were prepared on a connection (a move or a delete), a search whose fence refuses
// is fenced (memory.ErrFenced), not the prepared statement's error.
func TestPreparedSearchOfAGoneTenantIsFenced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pool := oneRouterConn(t, e)
	eng := newEngine(t, newBuiltin(t))
	s := e.tenant(t, registry.TierSchema)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text", Content: "routers and latency"})
	require.NoError(t, err)
	s.Pool = pool
	gone := false
	s.Fence = &memory.Fence{LockID: 42, Check: `SELECT CASE WHEN $1::bool THEN 'tenant' END`,
		Args: []any{&gone}}
	for range 3 {
		_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "routers latency"})
		require.NoError(t, err)
	}
	stmts, _, _ := preparedSearches(t, pool)
	require.NotEmpty(t, stmts)
	_, err = e.admin.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{s.Schema}.Sanitize()+` CASCADE`)
	require.NoError(t, err)
	gone = true
	for _, mode := range []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid} {
		_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "routers latency", SearchType: mode})
		require.ErrorIs(t, err, memory.ErrFenced, mode)
	}
}

// TestPreparedSearchFollowsAMovedTenant: a search whose fence finds the tenant moved runs again
// at the new location (Fence.Refresh) with statements made for that location. The legs' SQL
// names its schema; before the fix the refreshed read ran the old location's statements, and
// TestMoveAcrossTiersAndPlacements got 500s (42P01 on the dropped schema).
func TestPreparedSearchFollowsAMovedTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			from, to := e.tenant(t, registry.TierSchema), e.tenant(t, tier)
			for _, s := range []memory.Scope{from, to} {
				_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text",
					Content: "Tenant " + s.OwnerID + " keeps notes about routers and latency."})
				require.NoError(t, err)
			}
			for range 3 { // prepared on the connections
				_, err := eng.Search(ctx, from, memory.SearchParams{QueryText: "routers latency"})
				require.NoError(t, err)
			}
			moved := from
			moved.Fence = &memory.Fence{LockID: 43, Check: `SELECT 'tenant'::text`,
				Refresh: func(context.Context) (memory.Scope, error) { return to, nil }}
			for _, mode := range []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid} {
				res, err := eng.Search(ctx, moved, memory.SearchParams{QueryText: "routers latency", SearchType: mode})
				require.NoError(t, err, mode)
				require.NotEmpty(t, res.Results, mode)
				for _, r := range res.Results {
					require.Contains(t, r.Content, "Tenant "+to.OwnerID+" ", mode)
				}
			}
		})
	}
}
