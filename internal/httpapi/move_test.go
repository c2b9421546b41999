package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestMoveUnderLoad moves a tenant shared -> schema -> shared while a writer adds documents and
// readers search and read statistics through the router. Every answer is a 200, or, for a write
// during the move's last instant, a 503 with Retry-After; every acknowledged write is there
// exactly once afterwards; readers never see an error.
func TestMoveUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newRouterEnv(t)
	key := e.tenant("busy", registry.TierShared)
	e.tenant("quiet", registry.TierShared)
	// Enough rows that the copy takes a while.
	var lines []string
	for i := range 150 {
		lines = append(lines, fmt.Sprintf(`{"document_name": "pre-%d", "document_type": "text", "content": "%s"}`, i,
			strings.Repeat(fmt.Sprintf("Preloaded document %d about deploys and backups. ", i), 30)))
	}
	var imp importCounts
	e.ok(t, key, http.MethodPost, "/v1/documents/import", strings.Join(lines, "\n"), http.StatusOK, &imp)
	require.Equal(t, 150, imp.Documents)

	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		acked     []string
		paused    int
		problems  []string
		reads     atomic.Int64
		writeLost atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	wg.Go(func() {
		for n := 0; !stop.Load(); n++ {
			name := fmt.Sprintf("w-%d", n)
			for !stop.Load() {
				res := e.do(t, key, http.MethodPost, "/v1/documents", map[string]any{
					"document_name": name, "document_type": "text", "content": "written during the move, number " + name,
				})
				if res.status == http.StatusCreated {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
					break
				}
				if res.status == http.StatusServiceUnavailable && res.header.Get("Retry-After") != "" {
					mu.Lock()
					paused++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				fail("write %s: %d %s", name, res.status, res.body)
				writeLost.Add(1)
				break
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				res := e.do(t, key, http.MethodPost, "/v1/search", `{"query_text": "deploys backups", "limit": 5}`)
				if res.status != http.StatusOK {
					fail("search: %d %s", res.status, res.body)
				}
				res = e.do(t, key, http.MethodGet, "/v1/statistics", nil)
				if res.status != http.StatusOK {
					fail("statistics: %d %s", res.status, res.body)
				}
				reads.Add(2)
			}
		})
	}

	time.Sleep(200 * time.Millisecond)
	for _, to := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		res, err := e.prov.MoveTenant(ctx, "busy", provision.MoveParams{Tier: to})
		require.NoError(t, err)
		require.Equal(t, to, res.Tenant.Tier)
		t.Logf("moved to %s: %d rounds, %d changes, writes paused %s, took %s", to, res.Rounds, res.Changes, res.WritePause, res.Took)
		time.Sleep(300 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	require.Empty(t, problems)
	require.Zero(t, writeLost.Load())
	require.Positive(t, reads.Load())
	t.Logf("%d writes acknowledged, %d answered 503 (paused), %d reads", len(acked), paused, reads.Load())
	require.NotEmpty(t, acked)

	// Every acknowledged write is there exactly once, with its chunks, at the final place.
	tn, err := e.prov.GetTenant(ctx, "busy")
	require.NoError(t, err)
	rows, err := e.admin.Query(ctx, `SELECT d.document_name, count(*) OVER (PARTITION BY d.document_name),
			(SELECT count(*) FROM `+pgx.Identifier{tn.SchemaName, "chunks"}.Sanitize()+` c WHERE c.document_id = d.document_id)
		FROM `+pgx.Identifier{tn.SchemaName, "documents"}.Sanitize()+` d WHERE d.owner_id = 'busy' AND d.document_name LIKE 'w-%'`)
	require.NoError(t, err)
	got := map[string]bool{}
	var (
		name          string
		copies, chunk int
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &copies, &chunk}, func() error {
		require.Equal(t, 1, copies, "%s is there once", name)
		require.Equal(t, 1, chunk, "%s has its chunk", name)
		got[name] = true
		return nil
	})
	require.NoError(t, err)
	for _, a := range acked {
		require.True(t, got[a], "acknowledged write %s is there", a)
	}
	st := e.stats(t, key)
	require.Equal(t, 150+len(got), st.DocumentCount)
	require.Zero(t, e.stats(t, e.tenantKey(t, "quiet")).DocumentCount)
}

// importCounts mirrors httpapi.ImportResponse's counters.
type importCounts struct {
	Documents int `json:"documents"`
}

// tenantKey issues another key of a tenant.
func (e *routerEnv) tenantKey(t *testing.T, id string) string {
	t.Helper()
	k, err := e.prov.IssueKey(context.Background(), id)
	require.NoError(t, err)
	return k.Key
}
