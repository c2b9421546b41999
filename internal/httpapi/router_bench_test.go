package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// BenchmarkRouterOverhead measures what the router adds to a request: the same engine call
// (GET one document, and a hybrid search) once through HTTP + key resolution + middleware, and
// once directly through memory with a Scope on the same pool. It reports p50 and p99 of both
// and the difference, over sequential requests, then the router's throughput with 8 concurrent
// clients.
func BenchmarkRouterOverhead(b *testing.B) {
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(b, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	tn, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "bench", Tier: registry.TierSchema})
	require.NoError(b, err)

	pool, err := pgxpool.New(ctx, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer pool.Close()
	resolver, err := routing.New(routing.Config{Pool: pool})
	require.NoError(b, err)
	listenRegistry(b, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""), resolver)
	embedder, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	engine, err := memory.New(memory.Config{Embedder: embedder})
	require.NoError(b, err)
	reg := prometheus.NewRegistry()
	// The tenant's request rate unlimited: the 8-client phase measures the router, not the
	// default 500 requests/s of one tenant (which answers 429 beyond its burst).
	h, err := httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine, Registerer: reg,
		Limits: limit.Limits{RequestsPerSecond: limit.Unlimited, Burst: limit.Unlimited}})
	require.NoError(b, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	scope := memory.Scope{Pool: pool, Schema: tn.Tenant.SchemaName, OwnerID: tn.Tenant.ID, StatementTimeout: 30 * time.Second}

	var docID string
	for i := range 200 {
		res, err := engine.AddDocument(ctx, scope, memory.DocumentAddParams{
			DocumentName: fmt.Sprintf("doc %d", i), DocumentType: "text",
			Content: fmt.Sprintf("Document %d about tenants, routers, latency and pgvector search. It has a few sentences.", i),
		})
		require.NoError(b, err)
		docID = res.DocumentID
	}
	client := srv.Client()
	call := func(method, path string, body any) {
		var r io.Reader
		if body != nil {
			buf, _ := json.Marshal(body)
			r = bytes.NewReader(buf)
		}
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, r)
		req.Header.Set("Authorization", "Bearer "+tn.Key.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	query := map[string]any{"query_text": "router latency search", "search_type": "hybrid", "limit": 10}
	cases := []struct {
		name           string
		router, direct func()
	}{
		{"get", func() { call(http.MethodGet, "/v1/documents/"+docID, nil) }, func() {
			if _, err := engine.GetDocument(ctx, scope, memory.DocumentGetParams{DocumentID: docID}); err != nil {
				b.Fatal(err)
			}
		}},
		{"hybrid_search", func() { call(http.MethodPost, "/v1/search", query) }, func() {
			if _, err := engine.Search(ctx, scope, memory.SearchParams{QueryText: "router latency search", SearchType: "hybrid", Limit: new(10)}); err != nil {
				b.Fatal(err)
			}
		}},
	}
	const samples = 2000
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				// Interleave the two so both see the same state (search history grows with every
				// search and is pruned past its bound).
				for range 50 { // warm caches and connections
					c.direct()
					c.router()
				}
				direct, router := make([]time.Duration, samples), make([]time.Duration, samples)
				for i := range samples {
					start := time.Now()
					c.direct()
					direct[i] = time.Since(start)
					start = time.Now()
					c.router()
					router[i] = time.Since(start)
				}
				slices.Sort(direct)
				slices.Sort(router)
				pct := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) }
				b.ReportMetric(pct(direct, 0.50), "direct_p50_us")
				b.ReportMetric(pct(direct, 0.99), "direct_p99_us")
				b.ReportMetric(pct(router, 0.50), "router_p50_us")
				b.ReportMetric(pct(router, 0.99), "router_p99_us")
				b.ReportMetric(pct(router, 0.50)-pct(direct, 0.50), "added_p50_us")
				b.ReportMetric(pct(router, 0.99)-pct(direct, 0.99), "added_p99_us")

				// Throughput: 8 clients for 3 seconds.
				var n atomic.Int64
				deadline := time.Now().Add(3 * time.Second)
				var wg sync.WaitGroup
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(deadline) {
							c.router()
							n.Add(1)
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(n.Load())/3, "router_req/s")
			}
		})
	}
}
