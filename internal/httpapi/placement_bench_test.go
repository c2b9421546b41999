package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func pctUs(d []time.Duration, p float64) float64 {
	slices.Sort(d)
	return float64(d[int(p*float64(len(d)-1))].Microseconds())
}

// BenchmarkDatabaseTier measures the router in front of TENANTMEM_BENCH_DATABASE_TENANTS (default
// 1,000) database-tier tenants on the local placement, with a connection budget of
// TENANTMEM_BENCH_CONN_BUDGET (default 64) and 2 connections per tenant database:
//
//   - cold: the first request (GET /v1/statistics) of 200 tenants nobody touched yet (key and
//     handle resolution, a new pool, a new connection, the fence on the control database), then
//     a second request of each (warm), sequentially;
//   - random: 8 clients sending 5,000 requests to tenants drawn at random, sampling every 20 ms the
//     budget in use and the router's connections as the server counts them (pg_stat_activity);
//   - random_within_budget: the same among as many tenants as three quarters of the budget;
//   - overhead: GET one document and a hybrid search of one tenant (200 documents) through the
//     router, against the same engine call on a raw pgx pool to that tenant's database.
//
// Run it once: go test -run '^$' -bench DatabaseTier -benchtime 1x -timeout 60m ./internal/httpapi
func BenchmarkDatabaseTier(b *testing.B) {
	n := benchEnvInt("TENANTMEM_BENCH_DATABASE_TENANTS", 1000)
	budget := benchEnvInt("TENANTMEM_BENCH_CONN_BUDGET", 64)
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(b, err)
	cfg.MaxConns = 12
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin, Parallelism: 4})
	require.NoError(b, err)
	defer prov.Close()
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	s, err := registry.GetSettings(ctx, admin)
	require.NoError(b, err)
	marker := "tenantmem deployment " + s.DeploymentID + " "
	pgtest.DropDatabasesOnCleanup(b, pgtest.ServerURL(), marker)

	keys := make([]string, n)
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ids[i] = fmt.Sprintf("dbt-%05d", i)
				res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: ids[i], Tier: registry.TierDatabase})
				if err != nil {
					b.Error(err)
					return
				}
				keys[i] = res.Key.Key
			}
		})
	}
	wg.Wait()
	b.Logf("created %d database-tier tenants in %s (%.1f/s)", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())

	rcfg, err := pgxpool.ParseConfig(pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	rcfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, rcfg)
	require.NoError(b, err)
	defer pool.Close()
	pools, err := placement.New(placement.Config{Control: pool, Budget: budget, DatabaseMaxConns: 2})
	require.NoError(b, err)
	defer pools.Close()
	resolver, err := routing.New(routing.Config{Pool: pool, Pools: pools})
	require.NoError(b, err)
	listenRegistry(b, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""), resolver)
	embedder, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	engine, err := memory.New(memory.Config{Embedder: embedder})
	require.NoError(b, err)
	reg := prometheus.NewRegistry()
	h, err := httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine, Registerer: reg})
	require.NoError(b, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	call := func(key, method, path string, body any) int {
		var r io.Reader
		if body != nil {
			buf, _ := json.Marshal(body)
			r = bytes.NewReader(buf)
		}
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, r)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	serverConns := func() int {
		var c int
		require.NoError(b, admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname IN
			(SELECT datname FROM pg_database WHERE starts_with(shobj_description(oid, 'pg_database'), $2))`,
			provision.DefaultRouterRole, marker).Scan(&c))
		return c
	}

	b.Run("cold", func(b *testing.B) {
		for range b.N {
			m := min(200, n)
			cold, warm := make([]time.Duration, m), make([]time.Duration, m)
			for i := range m {
				t0 := time.Now()
				if code := call(keys[i], http.MethodGet, "/v1/statistics", nil); code != http.StatusOK {
					b.Fatalf("cold %s: %d", ids[i], code)
				}
				cold[i] = time.Since(t0)
				t0 = time.Now()
				if code := call(keys[i], http.MethodGet, "/v1/statistics", nil); code != http.StatusOK {
					b.Fatalf("warm %s: %d", ids[i], code)
				}
				warm[i] = time.Since(t0)
			}
			b.ReportMetric(pctUs(cold, 0.5), "cold_p50_us")
			b.ReportMetric(pctUs(cold, 0.99), "cold_p99_us")
			b.ReportMetric(pctUs(warm, 0.5), "warm_p50_us")
			b.ReportMetric(pctUs(warm, 0.99), "warm_p99_us")
		}
	})

	random := func(b *testing.B, among int) {
		for range b.N {
			const total, clients = 5000, 8
			var (
				sent, refused atomic.Int64
				mu            sync.Mutex
				lat           []time.Duration
				maxBudget     int
				maxServer     int
			)
			waits0 := pools.Stats().BudgetWaits
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						maxBudget = max(maxBudget, pools.Stats().BudgetInUse)
						maxServer = max(maxServer, serverConns())
					}
				}
			}()
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					r := mrand.New(mrand.NewPCG(uint64(c), 7))
					for sent.Add(1) <= total {
						i := r.IntN(among)
						t0 := time.Now()
						code := call(keys[i], http.MethodGet, "/v1/statistics", nil)
						d := time.Since(t0)
						switch code {
						case http.StatusOK:
						case http.StatusServiceUnavailable:
							refused.Add(1)
						default:
							b.Errorf("%s: %d", ids[i], code)
						}
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			close(stop)
			<-sampled
			st := pools.Stats()
			b.ReportMetric(float64(budget), "budget")
			b.ReportMetric(float64(maxBudget), "max_budget_in_use")
			b.ReportMetric(float64(maxServer), "max_server_conns")
			b.ReportMetric(float64(serverConns()), "server_conns_after")
			b.ReportMetric(float64(st.Pools), "pools_open")
			b.ReportMetric(float64(refused.Load()), "refused_503")
			b.ReportMetric(float64(st.BudgetWaits-waits0), "budget_waits")
			b.ReportMetric(pctUs(lat, 0.5), "p50_us")
			b.ReportMetric(pctUs(lat, 0.99), "p99_us")
		}
	}
	b.Run("random", func(b *testing.B) { random(b, n) })
	// A working set that fits in the budget: three quarters of it.
	b.Run("random_within_budget", func(b *testing.B) { random(b, min(n, budget*3/4)) })

	b.Run("overhead", func(b *testing.B) {
		tn, err := prov.GetTenant(ctx, ids[0])
		require.NoError(b, err)
		raw, err := pgxpool.New(ctx, pgtest.WithDatabase(b, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""), tn.DatabaseName))
		require.NoError(b, err)
		defer raw.Close()
		scope := memory.Scope{Pool: raw, Schema: tn.SchemaName, OwnerID: tn.ID, StatementTimeout: 30 * time.Second}
		var docID string
		for i := range 200 {
			res, err := engine.AddDocument(ctx, scope, memory.DocumentAddParams{
				DocumentName: fmt.Sprintf("doc %d", i), DocumentType: "text",
				Content: fmt.Sprintf("Document %d about tenants, routers, latency and pgvector search. It has a few sentences.", i),
			})
			require.NoError(b, err)
			docID = res.DocumentID
		}
		ok := func(code int) {
			if code != http.StatusOK {
				b.Fatalf("router: %d", code)
			}
		}
		query := map[string]any{"query_text": "router latency search", "search_type": "hybrid", "limit": 10}
		cases := []struct {
			name           string
			router, direct func()
		}{
			{"get", func() { ok(call(keys[0], http.MethodGet, "/v1/documents/"+docID, nil)) }, func() {
				if _, err := engine.GetDocument(ctx, scope, memory.DocumentGetParams{DocumentID: docID}); err != nil {
					b.Fatal(err)
				}
			}},
			{"hybrid_search", func() { ok(call(keys[0], http.MethodPost, "/v1/search", query)) }, func() {
				if _, err := engine.Search(ctx, scope, memory.SearchParams{QueryText: "router latency search", SearchType: "hybrid", Limit: new(10)}); err != nil {
					b.Fatal(err)
				}
			}},
		}
		for range b.N {
			for _, c := range cases {
				for range 50 {
					c.direct()
					c.router()
				}
				const samples = 1000
				direct, router := make([]time.Duration, samples), make([]time.Duration, samples)
				for i := range samples {
					t0 := time.Now()
					c.direct()
					direct[i] = time.Since(t0)
					t0 = time.Now()
					c.router()
					router[i] = time.Since(t0)
				}
				d50, d99, r50, r99 := pctUs(direct, 0.5), pctUs(direct, 0.99), pctUs(router, 0.5), pctUs(router, 0.99)
				b.ReportMetric(d50, c.name+"_direct_p50_us")
				b.ReportMetric(d99, c.name+"_direct_p99_us")
				b.ReportMetric(r50, c.name+"_router_p50_us")
				b.ReportMetric(r99, c.name+"_router_p99_us")
				b.ReportMetric(r50-d50, c.name+"_added_p50_us")
				b.ReportMetric(r99-d99, c.name+"_added_p99_us")
			}
		}
	})
}
