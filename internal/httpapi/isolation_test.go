package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// isoTenant is one tenant of the stress test, with the unique canary every one of its documents
// carries and the ids of the documents it owns.
type isoTenant struct {
	id, key, canary string
	mu              sync.Mutex
	docs            map[string]bool // document id -> still expected to exist
}

// owners maps every document id a tenant was given to that tenant, across all tenants.
var owners sync.Map

func (it *isoTenant) add(id string) {
	it.mu.Lock()
	defer it.mu.Unlock()
	it.docs[id] = true
	owners.Store(id, it)
}

// foreign reports whether id is known to belong to another tenant. An id nobody has recorded yet
// is a document whose add response has not been read: its canary is checked on its own.
func (it *isoTenant) foreign(id string) bool {
	o, ok := owners.Load(id)
	return ok && o.(*isoTenant) != it
}

func (it *isoTenant) pick(r *mrand.Rand) string {
	it.mu.Lock()
	defer it.mu.Unlock()
	for id := range it.docs { // map order is random enough
		if r.IntN(3) == 0 {
			return id
		}
	}
	for id := range it.docs {
		return id
	}
	return ""
}

// TestIsolationUnderConcurrentLoad runs many concurrent clients of 48 tenants (the three tiers,
// on the control server and on a second server, all behind one router) through the real router:
// random adds, searches in all three modes, lists, gets, deletes and statistics, while handles
// are evicted and purged, placements invalidated, and tenants suspended and resumed. Every
// response must contain only its own tenant's documents and canary.
func TestIsolationUnderConcurrentLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		tenantsN = 48
		clients  = 12
		opsEach  = 120
	)
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin, Credentials: testCredentials(t)})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	second := pgtest.Second(t)
	p2 := addPlacement(t, prov, admin, "p2", second)

	routerURL := pgtest.WithUser(t, url, provision.DefaultRouterRole, "")
	cfg, err := pgxpool.ParseConfig(routerURL)
	require.NoError(t, err)
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// Few pools and a small budget: tenant databases' pools are evicted and reopened all the time.
	pools, err := placement.New(placement.Config{Control: pool, Credentials: testCredentials(t), Budget: 12,
		DatabaseMaxConns: 2, MaxPools: 6})
	require.NoError(t, err)
	t.Cleanup(pools.Close)
	// A handle cache far smaller than the tenant count: most requests miss and reload.
	resolver, err := routing.New(routing.Config{Pool: pool, Pools: pools, Handles: 8, Keys: 8})
	require.NoError(t, err)
	listenRegistry(t, routerURL, resolver)

	embedder, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	engine, err := memory.New(memory.Config{Embedder: embedder})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	// Only errors are logged: a 500 shows its cause.
	errLog := slog.New(slog.NewJSONHandler(&logBuffer{t: t}, &slog.HandlerOptions{Level: slog.LevelError}))
	h, err := httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine, Registerer: reg,
		Logger: errLog})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	tenants := make([]*isoTenant, tenantsN)
	tiers := []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase}
	for i := range tenantsN {
		tier := tiers[i%3]
		place := []string{"local", "p2"}[(i/3)%2]
		id := fmt.Sprintf("iso-%02d", i)
		if i%5 == 0 {
			id = fmt.Sprintf("Org-%02d/Team.%d", i, i) // hashed schema and database names too
		}
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier, Placement: place})
		require.NoError(t, err)
		var b [8]byte
		_, _ = rand.Read(b[:])
		tenants[i] = &isoTenant{id: id, key: res.Key.Key, canary: "canary" + hex.EncodeToString(b[:]), docs: map[string]bool{}}
	}

	client := srv.Client()
	do := func(it *isoTenant, method, path string, body any) (int, []byte) {
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, r)
		req.Header.Set("Authorization", "Bearer "+it.key)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, out
	}
	addDoc := func(it *isoTenant, n int) (int, []byte) {
		return do(it, http.MethodPost, "/v1/documents", map[string]any{
			"document_name": fmt.Sprintf("%s doc %d", it.canary, n),
			"document_type": []string{"text", "markdown", "email", "chat"}[n%4],
			"content": fmt.Sprintf("Quarterly report about shared vocabulary and common words. Secret %s lives here. "+
				"Another sentence about pgvector search and hybrid ranking number %d.", it.canary, n),
			"metadata":     map[string]any{"owner_hint": it.id, "n": n},
			"id_at_origin": fmt.Sprintf("origin-%d", n%7), // the same origins in every tenant
		})
	}
	for _, it := range tenants {
		for n := range 3 {
			status, body := addDoc(it, n)
			require.Contains(t, []int{200, 201}, status, string(body))
			var res struct {
				DocumentID string `json:"document_id"`
			}
			require.NoError(t, json.Unmarshal(body, &res))
			it.add(res.DocumentID)
		}
	}

	var (
		violations atomic.Int64
		ops        sync.Map // op name -> *atomic.Int64
		suspended  sync.Map // tenant id -> true while suspended
	)
	count := func(op string) {
		v, _ := ops.LoadOrStore(op, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	violate := func(format string, args ...any) {
		violations.Add(1)
		t.Errorf(format, args...)
	}
	// check fails on any other tenant's canary in a body.
	check := func(it *isoTenant, op string, body []byte) {
		s := string(body)
		for _, other := range tenants {
			if other != it && strings.Contains(s, other.canary) {
				violate("%s of %s returned %s's canary: %.300s", op, it.id, other.id, s)
			}
		}
	}
	// 403 (suspended) and 503 (suspended while the request was on its way: the fence stopped it)
	// are correct answers around a suspension; they say nothing about isolation.
	suspensionAnswer := func(status int) bool {
		return status == http.StatusForbidden || status == http.StatusServiceUnavailable
	}
	okStatus := func(it *isoTenant, op string, status int, body []byte, want ...int) bool {
		for _, w := range want {
			if status == w {
				return true
			}
		}
		if suspensionAnswer(status) {
			if _, ok := suspended.Load(it.id); ok {
				return false // suspended right now
			}
			if status == http.StatusForbidden || strings.Contains(string(body), "tenant changed") {
				return false // a suspension raced with this request
			}
		}
		violate("%s of %s: status %d: %.300s", op, it.id, status, body)
		return false
	}

	// Chaos: evict, purge, suspend and resume while the clients run.
	chaosCtx, stopChaos := context.WithCancel(ctx)
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		r := mrand.New(mrand.NewPCG(1, 2))
		for i := 0; chaosCtx.Err() == nil; i++ {
			victim := tenants[r.IntN(tenantsN)]
			switch i % 5 {
			case 0:
				resolver.EvictTenant(victim.id)
			case 1:
				resolver.Purge()
			case 3:
				pools.Invalidate([]string{"local", "p2"}[r.IntN(2)])
			case 2:
				suspended.Store(victim.id, true)
				if _, err := prov.SuspendTenant(ctx, victim.id); err != nil {
					t.Errorf("suspend: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
				if _, err := prov.ResumeTenant(ctx, victim.id); err != nil {
					t.Errorf("resume: %v", err)
				}
				// The resume notification evicts asynchronously; stay "suspended" until it lands.
				time.Sleep(50 * time.Millisecond)
				suspended.Delete(victim.id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(c), 99))
			for n := range opsEach {
				it := tenants[r.IntN(tenantsN)]
				other := tenants[r.IntN(tenantsN)]
				switch op := r.IntN(9); op {
				case 0: // add
					status, body := addDoc(it, 100+c*1000+n)
					check(it, "add", body)
					if okStatus(it, "add", status, body, 200, 201) {
						var res struct {
							DocumentID string `json:"document_id"`
						}
						_ = json.Unmarshal(body, &res)
						it.add(res.DocumentID)
						count("add")
					}
				case 1, 2: // search, all three modes, with the words every tenant's documents share
					mode := []string{"vector", "text", "hybrid"}[r.IntN(3)]
					status, body := do(it, http.MethodPost, "/v1/search", map[string]any{
						// The tenant's canary in the query makes its search history a canary carrier too.
						"query_text": "quarterly report shared vocabulary secret canary pgvector " + it.canary, "search_type": mode,
						"limit": 20, "include_parent_context": r.IntN(2) == 0, "include_documents": true,
					})
					check(it, "search "+mode, body)
					if okStatus(it, "search", status, body, 200) {
						var res struct {
							Results []struct {
								DocumentID string `json:"document_id"`
							} `json:"results"`
						}
						require.NoError(t, json.Unmarshal(body, &res))
						for _, hit := range res.Results {
							if it.foreign(hit.DocumentID) {
								violate("search of %s returned foreign document %s", it.id, hit.DocumentID)
							}
						}
						count("search " + mode)
					}
				case 3: // list
					status, body := do(it, http.MethodGet, "/v1/documents?limit=100", nil)
					check(it, "list", body)
					if okStatus(it, "list", status, body, 200) {
						var res struct {
							Documents []struct {
								DocumentID string `json:"document_id"`
							} `json:"documents"`
						}
						require.NoError(t, json.Unmarshal(body, &res))
						for _, d := range res.Documents {
							if it.foreign(d.DocumentID) {
								violate("list of %s returned foreign document %s", it.id, d.DocumentID)
							}
						}
						count("list")
					}
				case 4: // get own, with chunks
					if id := it.pick(r); id != "" {
						status, body := do(it, http.MethodGet, "/v1/documents/"+id+"?include_chunks=true", nil)
						check(it, "get", body)
						if okStatus(it, "get", status, body, 200, 404) { // 404: deleted concurrently
							count("get")
						}
					}
				case 5: // get and delete another tenant's document: exactly like a missing one
					if id := other.pick(r); id != "" && other != it {
						status, body := do(it, http.MethodGet, "/v1/documents/"+id, nil)
						check(it, "foreign get", body)
						okStatus(it, "foreign get", status, body, 404)
						status, body = do(it, http.MethodDelete, "/v1/documents/"+id, nil)
						check(it, "foreign delete", body)
						okStatus(it, "foreign delete", status, body, 404)
						status, body = do(it, http.MethodPost, "/v1/documents/delete", map[string]any{"document_ids": []string{id}})
						check(it, "foreign bulk delete", body)
						if okStatus(it, "foreign bulk delete", status, body, 200) && !strings.Contains(string(body), `"deleted_count":0`) {
							violate("bulk delete by %s of %s's document %s: %s", it.id, other.id, id, body)
						}
						count("foreign access")
					}
				case 6: // delete own
					if id := it.pick(r); id != "" {
						status, body := do(it, http.MethodDelete, "/v1/documents/"+id, nil)
						check(it, "delete", body)
						if okStatus(it, "delete", status, body, 204, 404) {
							count("delete")
						}
					}
				case 8: // search history and the embedding queue
					status, body := do(it, http.MethodGet, "/v1/search/history?limit=100", nil)
					check(it, "history", body)
					if okStatus(it, "history", status, body, 200) {
						count("history")
					}
					status, body = do(it, http.MethodGet, "/v1/embeddings/status", nil)
					check(it, "embeddings status", body)
					okStatus(it, "embeddings status", status, body, 200)
				case 7: // statistics
					status, body := do(it, http.MethodGet, "/v1/statistics", nil)
					check(it, "statistics", body)
					if okStatus(it, "statistics", status, body, 200) {
						count("statistics")
					}
				}
			}
		}()
	}
	wg.Wait()
	stopChaos()
	<-chaosDone

	// A last look through every tenant's own list.
	for _, it := range tenants {
		status, body := do(it, http.MethodGet, "/v1/documents?limit=100", nil)
		require.Equal(t, http.StatusOK, status, string(body))
		check(it, "final list", body)
	}
	summary := map[string]int64{}
	ops.Range(func(k, v any) bool { summary[k.(string)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("operations: %v; resolver: %+v", summary, resolver.Stats())
	require.Zero(t, violations.Load())
	for _, op := range []string{"add", "search vector", "search text", "search hybrid", "list", "get", "foreign access", "delete", "statistics", "history"} {
		require.Positive(t, summary[op], "no successful %s", op)
	}
	t.Logf("pools: %+v", pools.Stats())
	require.LessOrEqual(t, pools.Stats().BudgetInUse, 12)
	// Cross-check in the database, as the superuser: every row still carries the owner whose
	// canary it holds, on whichever server and in whichever database it lives.
	for _, it := range tenants {
		tn, err := prov.GetTenant(ctx, it.id)
		require.NoError(t, err)
		server, dbname := pgtest.ServerURL(), ""
		if tn.PlacementID == "p2" {
			server, dbname = second.URL(), p2.Database
		}
		if tn.DatabaseName != "" {
			dbname = tn.DatabaseName
		}
		conn := admin
		if dbname != "" {
			c, err := pgxpool.New(ctx, pgtest.WithDatabase(t, server, dbname))
			require.NoError(t, err)
			defer c.Close()
			conn = c
		}
		var foreign int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{tn.SchemaName, "documents"}.Sanitize()+`
			WHERE (owner_id = $1) <> (document_name LIKE $2 || '%')`, it.id, it.canary).Scan(&foreign))
		require.Zero(t, foreign, "rows of %s in %s/%s not matching their canary", it.id, dbname, tn.SchemaName)
	}
}
