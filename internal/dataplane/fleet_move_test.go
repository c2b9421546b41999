package dataplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestMoveAcrossTiersAndPlacements moves a tenant shared -> schema -> database on a second
// server -> shared on the control server, through one router with placement pools, while a writer
// adds documents and a reader searches. Every answer is a 200 or 201, or a 503 with Retry-After
// for a write in a move's last instant; afterwards every acknowledged write is there exactly
// once, the old copies are gone, and, as the router role, neither the neighbours nor the moved
// tenant can see one another's rows.
func TestMoveAcrossTiersAndPlacements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	second := pgtest.Second(t)
	d := fleetDeployment(t, map[string]*pgtest.Server{"p2": second})
	mk := func(id string, tier registry.Tier, pl string) string {
		res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier, Placement: pl})
		require.NoError(t, err)
		return res.Key.Key
	}
	moverKey := mk("mover", registry.TierShared, "local")
	neighbours := map[string]string{
		"shared-neighbour": mk("shared-neighbour", registry.TierShared, "local"),
		"p2-neighbour":     mk("p2-neighbour", registry.TierShared, "p2"),
	}
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: newFlaky(t), WorkerInterval: 50 * time.Millisecond,
		PlacementCredentials: credentials(t, "p2:router::\n"), ConnBudget: 8})
	add := func(key, name, content string) int {
		return r.call(t, key, http.MethodPost, "/v1/documents", map[string]string{
			"document_name": name, "document_type": "text", "content": content}, nil)
	}
	for id, key := range neighbours {
		require.Equal(t, http.StatusCreated, add(key, "canary", "canary of "+id+" zeppelin"))
	}
	for i := range 60 {
		require.Equal(t, http.StatusCreated, add(moverKey, "pre-"+strconv.Itoa(i), fmt.Sprintf("preloaded %d about deploys and backups", i)))
	}

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		acked    []string
		paused   int
		problems []string
		reads    atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	wg.Go(func() {
		for n := 0; !stop.Load(); n++ {
			name := "w-" + strconv.Itoa(n)
			for !stop.Load() {
				code, header := r.callHeader(t, moverKey, http.MethodPost, "/v1/documents", map[string]string{
					"document_name": name, "document_type": "text", "content": "written during a move, " + name})
				if code == http.StatusCreated {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
					break
				}
				if code == http.StatusServiceUnavailable && header.Get("Retry-After") != "" {
					mu.Lock()
					paused++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				fail("write %s: %d", name, code)
				return
			}
		}
	})
	wg.Go(func() {
		for !stop.Load() {
			var sr memory.SearchResponse
			if code := r.call(t, moverKey, http.MethodPost, "/v1/search", map[string]any{"query_text": "deploys backups", "limit": 5}, &sr); code != http.StatusOK {
				fail("search: %d", code)
			}
			reads.Add(1)
		}
	})

	steps := []struct {
		tier      registry.Tier
		placement string
	}{
		{registry.TierSchema, ""},
		{registry.TierDatabase, "p2"},
		{registry.TierShared, "local"},
	}
	var visited []registry.Tenant
	before, err := d.prov.GetTenant(ctx, "mover")
	require.NoError(t, err)
	visited = append(visited, before)
	for _, s := range steps {
		time.Sleep(300 * time.Millisecond) // writes before each move, and during its copy
		res, err := d.prov.MoveTenant(ctx, "mover", provision.MoveParams{Tier: s.tier, Placement: s.placement})
		require.NoError(t, err, "move to %s on %q", s.tier, s.placement)
		require.Equal(t, s.tier, res.Tenant.Tier)
		if s.placement != "" {
			require.Equal(t, s.placement, res.Tenant.PlacementID)
		}
		t.Logf("moved to %s: %d rounds, %d changes, writes paused %s, took %s", res.Tenant.Location(), res.Rounds, res.Changes,
			res.WritePause, res.Took)
		visited = append(visited, res.Tenant)
	}
	require.Equal(t, "local", visited[1].PlacementID, "a move without a placement stays on the tenant's own")
	require.NotEmpty(t, visited[2].DatabaseName)
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	require.Empty(t, problems)
	require.Positive(t, reads.Load())
	require.NotEmpty(t, acked)
	t.Logf("%d writes acknowledged, %d answered 503 (paused), %d searches", len(acked), paused, reads.Load())

	// Every acknowledged write is there exactly once, through the router.
	names := map[string]int{}
	for offset := 0; ; offset += memory.MaxLimit {
		var page memory.DocumentListResult
		require.Equal(t, http.StatusOK, r.call(t, moverKey, http.MethodGet,
			fmt.Sprintf("/v1/documents?limit=%d&offset=%d&order_by=document_name&order=asc", memory.MaxLimit, offset), nil, &page))
		for _, doc := range page.Documents {
			names[doc.DocumentName]++
		}
		if offset+memory.MaxLimit >= page.Total {
			break
		}
	}
	require.Len(t, names, 60+len(acked))
	for name, n := range names {
		require.Equal(t, 1, n, "%s is there once", name)
	}
	for _, a := range acked {
		require.Contains(t, names, a)
	}

	// The copies the moves left are gone: the schema on local, the database on p2.
	var n int
	require.NoError(t, d.admin.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, visited[1].SchemaName).Scan(&n))
	require.Zero(t, n, "the schema-tier copy")
	sp := superPool(t, second, "postgres")
	require.NoError(t, sp.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, visited[2].DatabaseName).Scan(&n))
	require.Zero(t, n, "the database-tier copy")

	// Isolation, as the router role: through the API, nobody finds another's rows...
	for id, key := range neighbours {
		var sr memory.SearchResponse
		require.Equal(t, http.StatusOK, r.call(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "deploys backups written move", "search_type": "text"}, &sr))
		require.Empty(t, sr.Results, id)
		var st memory.Statistics
		require.Equal(t, http.StatusOK, r.call(t, key, http.MethodGet, "/v1/statistics", nil, &st))
		require.EqualValues(t, 1, st.DocumentCount, id)
	}
	var sr memory.SearchResponse
	require.Equal(t, http.StatusOK, r.call(t, moverKey, http.MethodPost, "/v1/search", map[string]any{"query_text": "zeppelin canary", "search_type": "text"}, &sr))
	require.Empty(t, sr.Results)
	// ...and in the shared schema the router role sees the mover's rows only as the mover.
	rp := routerConn(t, d.routerURL)
	for _, owner := range []string{"", "shared-neighbour"} {
		err := pgx.BeginFunc(ctx, rp, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, owner); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenantmem_shared.documents WHERE owner_id = 'mover')
				+ (SELECT count(*) FROM tenantmem_shared.chunks WHERE owner_id = 'mover')`).Scan(&n)
		})
		require.NoError(t, err)
		require.Zero(t, n, "owner %q", owner)
	}
}

// callHeader is call for a request whose answer's header matters; it returns the status and the
// header.
func (r *running) callHeader(t *testing.T, key, method, path string, body any) (int, http.Header) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(method, r.base+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header
}

// superPool connects to a database of server as its superuser.
func superPool(t *testing.T, server *pgtest.Server, dbname string) *pgxpool.Pool {
	t.Helper()
	u, err := url.Parse(server.URL())
	require.NoError(t, err)
	u.Path = "/" + dbname
	p, err := pgxpool.New(context.Background(), u.String())
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// routerConn is one connection as the router role.
func routerConn(t *testing.T, routerURL string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), routerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
