package dataplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// BenchmarkNoisyNeighbour measures issue 9's fair sharing, in each tier: two victim tenants (one
// client each, a mix of hybrid searches, document reads, lists and statistics on 200 documents)
// run alone, then beside an aggressive neighbour in the same tier (12 clients: half saturating
// ingest of 200 KB documents with a tiny child_size, half expensive hybrid searches of 100
// results with parent context over its 20,000 chunks), all with the router's default limits.
// It reports the victims' p50 and p99 in both phases and what the neighbour got.
//
//	TENANTMEM_BENCH_SECONDS (default 15) sets each phase's length.
func BenchmarkNoisyNeighbour(b *testing.B) {
	secs := 15
	if v := os.Getenv("TENANTMEM_BENCH_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err)
		secs = n
	}
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		b.Run("tier="+string(tier), func(b *testing.B) {
			for range b.N {
				noisyNeighbour(b, tier, time.Duration(secs)*time.Second)
			}
		})
	}
}

type benchClient struct {
	base   string
	client *http.Client
}

func (c benchClient) do(key, method, path string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func benchText(r *rand.Rand, words int) string {
	vocab := strings.Fields(`tenant memory vector search index chunk parent child database quota rate limit burst fair
		share router schema shared ingest embedding document deploy backup runbook incident latency replica`)
	var sb strings.Builder
	for i := 0; i < words; i++ {
		sb.WriteString(vocab[r.Intn(len(vocab))])
		if r.Intn(14) == 0 {
			sb.WriteString(".\n\n")
		} else {
			sb.WriteByte(' ')
		}
	}
	return sb.String()
}

// startBenchRouter starts a throwaway deployment (init, the router on a loopback port as the router
// role, the builtin embedder, default settings) for the duration of b, and returns its
// provisioner and a client of the router whose requests time out after timeout.
func startBenchRouter(b *testing.B, timeout time.Duration) (*provision.Provisioner, benchClient) {
	b.Helper()
	prov, c, _ := startBenchRouterAdmin(b, timeout)
	return prov, c
}

// startBenchRouterAdmin is startBenchRouter that also returns the superuser pool of the deployment.
func startBenchRouterAdmin(b *testing.B, timeout time.Duration) (*provision.Provisioner, benchClient, *pgxpool.Pool) {
	b.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	b.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(b, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	builtin, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	cfg := dataplane.Config{DatabaseURL: pgtest.WithUser(b, url, provision.DefaultRouterRole, ""),
		Provider: builtin, Logger: slog.New(slog.DiscardHandler)}
	if v := os.Getenv("TENANTMEM_BENCH_BULK_YIELD"); v != "" { // e.g. -1ns: off
		cfg.BulkYield, err = time.ParseDuration(v)
		require.NoError(b, err)
	}
	svc, err := dataplane.Open(ctx, cfg)
	require.NoError(b, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx, ln) }()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(func() {
		transport.CloseIdleConnections()
		stop()
		require.NoError(b, <-done)
		svc.Close()
	})
	return prov, benchClient{base: "http://" + ln.Addr().String(), client: &http.Client{Transport: transport, Timeout: timeout}}, admin
}

func noisyNeighbour(b *testing.B, tier registry.Tier, phase time.Duration) {
	ctx := context.Background()
	prov, c, admin := startBenchRouterAdmin(b, 2*time.Minute)
	mode := os.Getenv("TENANTMEM_BENCH_NEIGHBOUR") // ingest, search or both (default)

	key := func(id string) string {
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
		require.NoError(b, err)
		return res.Key.Key
	}
	r := rand.New(rand.NewSource(1))
	victims := []string{key("victim-1"), key("victim-2")}
	neighbour := key("neighbour")
	docs := map[string][]string{}
	for _, v := range victims {
		for i := range 200 {
			code, body := c.do(v, http.MethodPost, "/v1/documents", map[string]any{"document_name": fmt.Sprint("doc ", i),
				"document_type": "text", "content": benchText(r, 400)})
			require.Equal(b, http.StatusCreated, code, string(body))
			var d struct {
				DocumentID string `json:"document_id"`
			}
			require.NoError(b, json.Unmarshal(body, &d))
			docs[v] = append(docs[v], d.DocumentID)
			time.Sleep(10 * time.Millisecond) // stay under the default request rate
		}
	}
	for range 40 { // 20,000 chunks for the neighbour's expensive searches
		code, body := c.do(neighbour, http.MethodPost, "/v1/documents", map[string]any{"document_name": "corpus",
			"document_type": "text", "content": benchText(r, 30000), "chunking": map[string]int{"parent_size": 600, "child_size": 64}})
		require.Equal(b, http.StatusCreated, code, string(body))
	}

	victimLoad := func(ctx context.Context) ([]time.Duration, map[int][]time.Duration) {
		var (
			mu   sync.Mutex
			lat  []time.Duration
			byOp = map[int][]time.Duration{}
			wg   sync.WaitGroup
		)
		for vi, v := range victims {
			wg.Go(func() {
				r := rand.New(rand.NewSource(int64(vi)))
				for i := 0; ctx.Err() == nil; i++ {
					var code int
					start := time.Now()
					switch i % 4 {
					case 0:
						code, _ = c.do(v, http.MethodPost, "/v1/search", map[string]any{"query_text": benchText(r, 3), "limit": 10})
					case 1:
						code, _ = c.do(v, http.MethodGet, "/v1/documents/"+docs[v][r.Intn(len(docs[v]))], nil)
					case 2:
						code, _ = c.do(v, http.MethodGet, "/v1/documents?limit=20", nil)
					case 3:
						code, _ = c.do(v, http.MethodGet, "/v1/statistics", nil)
					}
					took := time.Since(start)
					if code != http.StatusOK {
						b.Errorf("victim got %d", code)
						return
					}
					mu.Lock()
					lat = append(lat, took)
					byOp[i%4] = append(byOp[i%4], took)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // a client that thinks between requests
				}
			})
		}
		wg.Wait()
		return lat, byOp
	}
	pct := func(lat []time.Duration, p float64) float64 {
		s := slices.Clone(lat)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}

	// Warm up, then the victims alone.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, _ = victimLoad(wctx)
	cancel()
	actx, cancel := context.WithTimeout(ctx, phase)
	alone, aloneOps := victimLoad(actx)
	cancel()

	// The same, beside the neighbour.
	nctx, cancelN := context.WithCancel(ctx)
	var (
		nwg   sync.WaitGroup
		nmu   sync.Mutex
		codes = map[string]map[int]int{}
	)
	count := func(op string, code int) {
		nmu.Lock()
		defer nmu.Unlock()
		if codes[op] == nil {
			codes[op] = map[int]int{}
		}
		codes[op][code]++
	}
	big := benchText(r, 35000) // about 200 KB
	for i := range 12 {
		nwg.Go(func() {
			for nctx.Err() == nil {
				if (i%2 == 0 || mode == "ingest") && mode != "search" {
					code, _ := c.do(neighbour, http.MethodPost, "/v1/documents", map[string]any{"document_name": "flood",
						"document_type": "text", "content": big, "chunking": map[string]int{"parent_size": 32, "child_size": 16}})
					count("ingest", code)
				} else {
					code, _ := c.do(neighbour, http.MethodPost, "/v1/search", map[string]any{"query_text": "tenant memory vector",
						"limit": 100, "include_parent_context": true, "include_documents": true})
					count("search", code)
				}
			}
		})
	}
	time.Sleep(2 * time.Second) // the neighbour at full pressure first
	bctx, cancel := context.WithTimeout(ctx, phase)
	waits := map[string]int{}
	var swg sync.WaitGroup
	if os.Getenv("TENANTMEM_BENCH_WAITS") != "" {
		swg.Go(func() {
			for bctx.Err() == nil {
				rows, err := admin.Query(bctx, `SELECT coalesce(wait_event_type,'CPU')||':'||coalesce(wait_event,'-')||' '||left(regexp_replace(query, '\s+', ' ', 'g'), 50)
					FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)
				if err != nil {
					continue
				}
				for rows.Next() {
					var w string
					if rows.Scan(&w) == nil {
						waits[w]++
					}
				}
				rows.Close()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	beside, besideOps := victimLoad(bctx)
	cancel()
	swg.Wait()
	type kv struct {
		k string
		v int
	}
	var top []kv
	for k, v := range waits {
		top = append(top, kv{k, v})
	}
	slices.SortFunc(top, func(a, b kv) int { return b.v - a.v })
	for _, t := range top[:min(25, len(top))] {
		b.Logf("wait %6d %s", t.v, t.k)
	}
	cancelN()
	nwg.Wait()

	for op, name := range []string{"search", "get", "list", "statistics"} {
		b.Logf("tier %s %s: alone p50 %.2f p99 %.2f ms; beside p50 %.2f p99 %.2f ms", tier, name,
			pct(aloneOps[op], 0.5), pct(aloneOps[op], 0.99), pct(besideOps[op], 0.5), pct(besideOps[op], 0.99))
	}
	a50, a99, n50, n99 := pct(alone, 0.5), pct(alone, 0.99), pct(beside, 0.5), pct(beside, 0.99)
	b.ReportMetric(a99, "p99-alone-ms")
	b.ReportMetric(n99, "p99-neighbour-ms")
	b.ReportMetric(n99/a99, "p99-ratio")
	b.Logf("tier %s: victims alone p50 %.2f ms p99 %.2f ms (%d requests); beside the neighbour p50 %.2f ms p99 %.2f ms (%d requests), p99 %+.0f%%; neighbour got %v",
		tier, a50, a99, len(alone), n50, n99, len(beside), 100*(n99/a99-1), codes)
}

// BenchmarkRevocation measures how soon a revoked key is refused: eight clients send requests
// with one key as fast as they can while the key is revoked with the provisioner; it counts the
// requests that started after RevokeKey returned and were still served (the fence makes that 0),
// and how long after the return the last success and the first 401 arrived.
func BenchmarkRevocation(b *testing.B) {
	for range b.N {
		revocation(b)
	}
}

func revocation(b *testing.B) {
	ctx := context.Background()
	prov, c := startBenchRouter(b, time.Minute)
	res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "revoked", Tier: registry.TierShared})
	require.NoError(b, err)
	// No tenant limits here: the clients go as fast as they can.
	zero, big := 0.0, 1<<20
	_, err = prov.SetTenantLimits(ctx, "revoked", registry.TenantLimits{RequestsPerSecond: &zero, MaxConcurrent: &big})
	require.NoError(b, err)
	key := res.Key.Key
	type sample struct {
		start, end time.Time
		code       int
	}
	var (
		mu      sync.Mutex
		samples []sample
		wg      sync.WaitGroup
	)
	lctx, cancel := context.WithCancel(ctx)
	for range 8 {
		wg.Go(func() {
			for lctx.Err() == nil {
				s := time.Now()
				code, _ := c.do(key, http.MethodGet, "/v1/statistics", nil)
				mu.Lock()
				samples = append(samples, sample{start: s, end: time.Now(), code: code})
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	require.NoError(b, prov.RevokeKey(ctx, "revoked", res.Key.KeyID))
	revoked := time.Now()
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	var servedAfter, total int
	var lastOK, first401 time.Duration = -1, -1
	for _, s := range samples {
		total++
		switch {
		case s.code == http.StatusOK && s.start.After(revoked):
			servedAfter++
		case s.code == http.StatusUnauthorized && (first401 < 0 || s.end.Sub(revoked) < first401):
			first401 = s.end.Sub(revoked)
		}
		if s.code == http.StatusOK && s.end.Sub(revoked) > lastOK {
			lastOK = s.end.Sub(revoked)
		}
	}
	b.ReportMetric(float64(servedAfter), "served-after-revoke")
	b.ReportMetric(float64(first401.Microseconds())/1000, "first-401-ms")
	b.Logf("%d requests; started after revoke returned and still served: %d; last success answered %.2f ms after the return (started before it); first 401 answered %.2f ms after",
		total, servedAfter, float64(lastOK.Microseconds())/1000, float64(first401.Microseconds())/1000)
}

// BenchmarkLargeIngest sends one document of 10 MB (the largest content accepted) through the
// router with its default settings, in each tier, and reports how long it took and how many
// chunks it made. Before ingest was batched, one INSERT carried every chunk and ran past the
// 30 s statement timeout.
func BenchmarkLargeIngest(b *testing.B) {
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		b.Run("tier="+string(tier), func(b *testing.B) {
			ctx := context.Background()
			prov, c := startBenchRouter(b, 5*time.Minute)
			res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "big", Tier: tier})
			require.NoError(b, err)
			content := benchText(rand.New(rand.NewSource(2)), 1_650_000)
			content = content[:min(len(content), 10<<20)]
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				code, body := c.do(res.Key.Key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "10 MB",
					"document_type": "text", "content": content, "id_at_origin": fmt.Sprint("big-", i)})
				require.Equal(b, http.StatusCreated, code, string(body))
				var added struct {
					ChunksCreated int `json:"chunks_created"`
				}
				require.NoError(b, json.Unmarshal(body, &added))
				b.Logf("tier %s: %d bytes, %d chunks in %s", tier, len(content), added.ChunksCreated, time.Since(start).Round(time.Millisecond))
				b.ReportMetric(float64(added.ChunksCreated), "chunks")
			}
		})
	}
}
