package dataplane_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testDim = 64

// flaky is the builtin embedder failing its next n calls.
type flaky struct {
	embed.Provider
	failures atomic.Int64
}

func (f *flaky) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, fmt.Errorf("%w: test outage", embed.ErrUnavailable)
	}
	return f.Provider.Embed(ctx, texts)
}

func newFlaky(t *testing.T) *flaky {
	t.Helper()
	b, err := embed.NewBuiltin(testDim)
	require.NoError(t, err)
	return &flaky{Provider: b}
}

// deployment is an initialised database.
type deployment struct {
	url, routerURL string
	admin          *pgxpool.Pool
	prov           *provision.Provisioner
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: testDim})
	require.NoError(t, err)
	return &deployment{url: url, routerURL: pgtest.WithUser(t, url, provision.DefaultRouterRole, ""), admin: admin, prov: prov}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// running is a Service serving on a loopback port.
type running struct {
	base string
	svc  *dataplane.Service
}

// start opens and runs a service until the test ends.
func start(t *testing.T, cfg dataplane.Config) *running {
	t.Helper()
	cfg.Logger = testLogger(t)
	svc, err := dataplane.Open(context.Background(), cfg)
	require.NoError(t, err)
	return serve(t, svc)
}

// withLogger sends the service's JSON logs to w.
func withLogger(cfg dataplane.Config, w io.Writer) dataplane.Config {
	cfg.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// serve runs an open service until the test ends.
func serve(t *testing.T, svc *dataplane.Service) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		svc.Close()
	})
	return &running{base: "http://" + ln.Addr().String(), svc: svc}
}

func (r *running) call(t *testing.T, key, method, path string, body any, v any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if v != nil && res.StatusCode < 300 {
		require.NoError(t, json.Unmarshal(b, v), string(b))
	}
	return res.StatusCode
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServiceEmbedsWhatIngestQueued: a provider failure at ingest queues the chunks; the worker,
// woken by the ingest, embeds them at once.
func TestServiceEmbedsWhatIngestQueued(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	p := newFlaky(t)
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond})
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		res, err := d.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: "ingest-" + string(tier), Tier: tier})
		require.NoError(t, err)
		key := res.Key.Key
		p.failures.Store(1) // the ingest call fails; the worker's succeeds
		var added memory.DocumentAddResult
		require.Equal(t, http.StatusCreated, r.call(t, key, http.MethodPost, "/v1/documents", map[string]string{
			"document_name": "n", "document_type": "text", "content": "embedded later by the worker",
		}, &added))
		require.Positive(t, added.EmbeddingsPending)
		waitUntil(t, 30*time.Second, "the worker to embed the queued chunks", func() bool {
			var st memory.EmbeddingQueueStats
			require.Equal(t, http.StatusOK, r.call(t, key, http.MethodGet, "/v1/embeddings/status", nil, &st))
			return st.Pending == 0 && st.Failed == 0
		})
		var sr memory.SearchResponse
		require.Equal(t, http.StatusOK, r.call(t, key, http.MethodPost, "/v1/search",
			map[string]string{"query_text": "worker", "search_type": "vector"}, &sr))
		require.Len(t, sr.Results, 1)
	}
}

// TestServiceFindsWorkQueuedBeforeItStarted: jobs queued while no router ran (a crash, another
// replica) are in the work queue; the service embeds them without any ingest.
func TestServiceFindsWorkQueuedBeforeItStarted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	p := newFlaky(t)
	engine, scopes := queueWork(t, d, p, "left")
	start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond})
	for _, s := range scopes {
		waitUntil(t, 30*time.Second, "the worker to embed "+s.OwnerID, func() bool {
			st, err := engine.EmbeddingStats(ctx, s)
			require.NoError(t, err)
			return st.Pending == 0
		})
	}
}

// queueWork creates a tenant per tier and leaves one document of each with queued embeddings.
func queueWork(t *testing.T, d *deployment, p *flaky, prefix string) (*memory.Engine, []memory.Scope) {
	t.Helper()
	ctx := context.Background()
	routerPool, err := pgxpool.New(ctx, d.routerURL)
	require.NoError(t, err)
	t.Cleanup(routerPool.Close)
	engine, err := memory.New(memory.Config{Embedder: p})
	require.NoError(t, err)
	var scopes []memory.Scope
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: prefix + "-" + string(tier), Tier: tier})
		require.NoError(t, err)
		s := memory.Scope{Pool: routerPool, Schema: res.Tenant.SchemaName, OwnerID: res.Tenant.ID}
		p.failures.Store(1)
		added, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
			Content: "left behind by a crashed router"})
		require.NoError(t, err)
		require.Positive(t, added.EmbeddingsPending)
		scopes = append(scopes, s)
	}
	return engine, scopes
}

// TestReconciliationFindsUnlistedWork: jobs the work queue does not know of (queued by a release
// before the queue existed) are found by the rate-bounded reconciliation at start.
func TestReconciliationFindsUnlistedWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	p := newFlaky(t)
	engine, scopes := queueWork(t, d, p, "unlisted")
	_, err := d.admin.Exec(ctx, `DELETE FROM tenantmem_placement.embedding_work`)
	require.NoError(t, err)
	start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond, ReconcileRate: 1000})
	for _, s := range scopes {
		waitUntil(t, 30*time.Second, "the reconciliation to find "+s.OwnerID, func() bool {
			st, err := engine.EmbeddingStats(ctx, s)
			require.NoError(t, err)
			return st.Pending == 0
		})
	}
}

// TestWorkerKeepsATenantWhoseQueueCannotBeRead: when the worker cannot read a tenant's queue it
// tries again with backoff instead of dropping the tenant until a sweep minutes later (issue 9);
// the jobs are embedded once the queue is readable again.
func TestWorkerKeepsATenantWhoseQueueCannotBeRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	p := newFlaky(t)
	engine, scopes := queueWork(t, d, p, "unreadable")
	s := scopes[1] // the schema-tier tenant
	_, err := d.admin.Exec(ctx, `REVOKE SELECT, UPDATE ON `+s.Schema+`.embedding_jobs FROM `+provision.DefaultRouterRole)
	require.NoError(t, err)
	start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond,
		ReconcileInterval: time.Hour})
	waitUntil(t, 30*time.Second, "the worker to fail on the tenant a few times", func() bool {
		var failures int
		require.NoError(t, d.admin.QueryRow(ctx, `SELECT coalesce(max(failures), 0) FROM tenantmem_placement.embedding_work
			WHERE owner_id = $1`, s.OwnerID).Scan(&failures))
		return failures >= 2
	})
	_, err = d.admin.Exec(ctx, `GRANT SELECT, UPDATE ON `+s.Schema+`.embedding_jobs TO `+provision.DefaultRouterRole)
	require.NoError(t, err)
	waitUntil(t, 30*time.Second, "the worker to embed the tenant's jobs", func() bool {
		st, err := engine.EmbeddingStats(ctx, s)
		require.NoError(t, err)
		return st.Pending == 0
	})
}

// TestOpenRefusesUnsafeRoles: a superuser, a BYPASSRLS role and a member of the owner role would
// not be bound by row-level security; Open refuses them.
func TestOpenRefusesUnsafeRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	bypass, member := "t_bypass_"+suffix, "t_member_"+suffix
	for _, stmt := range []string{
		`CREATE ROLE ` + bypass + ` LOGIN BYPASSRLS`,
		`CREATE ROLE ` + member + ` LOGIN`,
		`GRANT ` + provision.DefaultOwnerRole + ` TO ` + member,
		`GRANT USAGE ON SCHEMA tenantmem_control TO ` + bypass + `, ` + member,
		`GRANT SELECT ON tenantmem_control.settings TO ` + bypass + `, ` + member,
	} {
		_, err := d.admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		for _, r := range []string{bypass, member} {
			_, err := d.admin.Exec(context.Background(), `DROP OWNED BY `+r+`; DROP ROLE `+r)
			require.NoError(t, err)
		}
	})
	for _, tc := range []struct{ given, url, expect string }{
		{"a superuser", d.url, "is a superuser"},
		{"a BYPASSRLS role", pgtest.WithUser(t, d.url, bypass, ""), "has BYPASSRLS"},
		{"a member of the owner role", pgtest.WithUser(t, d.url, member, ""), "is a member of " + provision.DefaultOwnerRole},
	} {
		_, err := dataplane.Open(ctx, dataplane.Config{DatabaseURL: tc.url})
		require.ErrorIs(t, err, dataplane.ErrUnsafeRole, tc.given)
		require.ErrorContains(t, err, tc.expect, tc.given)
	}
	svc, err := dataplane.Open(ctx, dataplane.Config{DatabaseURL: d.routerURL})
	require.NoError(t, err)
	svc.Close()
}

// TestOpenChecksTheConfiguration: a dimension other than the deployment's, a malformed URL and
// an uninitialised database are refused.
func TestOpenChecksTheConfiguration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	var ce *dataplane.ConfigError
	_, err := dataplane.Open(ctx, dataplane.Config{DatabaseURL: d.routerURL, Embedding: embed.Config{Dimension: testDim + 1}})
	require.ErrorAs(t, err, &ce)
	require.ErrorContains(t, err, fmt.Sprintf("differs from the deployment's %d", testDim))
	b, err := embed.NewBuiltin(testDim * 2)
	require.NoError(t, err)
	_, err = dataplane.Open(ctx, dataplane.Config{DatabaseURL: d.routerURL, Provider: b})
	require.ErrorAs(t, err, &ce)
	_, err = dataplane.Open(ctx, dataplane.Config{DatabaseURL: "postgres://%zz"})
	require.ErrorAs(t, err, &ce)
	_, err = dataplane.Open(ctx, dataplane.Config{})
	require.ErrorAs(t, err, &ce)

	// The router role exists (cluster-wide) but this database was never initialised.
	empty := pgtest.NewDatabase(t)
	_, err = dataplane.Open(ctx, dataplane.Config{DatabaseURL: pgtest.WithUser(t, empty, provision.DefaultRouterRole, "")})
	require.ErrorIs(t, err, provision.ErrNotInitialized)
	require.False(t, errors.As(err, &ce))
}

// TestRunStopsBeforeServingWhenCancelled: a Run cancelled while waiting for LISTEN returns nil
// and leaks nothing.
func TestRunStopsBeforeServingWhenCancelled(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	svc, err := dataplane.Open(context.Background(), dataplane.Config{DatabaseURL: d.routerURL})
	require.NoError(t, err)
	defer svc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, svc.Run(ctx, ln))
	_, err = net.Dial("tcp", ln.Addr().String())
	require.Error(t, err, "the listener is closed")
}

// fakeOpenAI is an OpenAI-compatible embeddings server backed by the builtin embedder, which
// answers 503 while down and counts the requests it gets.
type fakeOpenAI struct {
	srv      *httptest.Server
	down     atomic.Bool
	requests atomic.Int64
}

func newFakeOpenAI(t *testing.T) *fakeOpenAI {
	t.Helper()
	b, err := embed.NewBuiltin(testDim)
	require.NoError(t, err)
	f := &fakeOpenAI{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if f.down.Load() {
			http.Error(w, "upstream down", http.StatusServiceUnavailable)
			return
		}
		var in struct {
			Input []string `json:"input"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		vecs, err := b.Embed(r.Context(), in.Input)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		type item struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		}
		out := struct {
			Data []item `json:"data"`
		}{}
		for i, v := range vecs {
			out.Data = append(out.Data, item{Index: i, Embedding: v})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestIngestQueuesAtOnceWhileTheProviderIsDown: with the provider down, the first ingest gives up
// after a few attempts (the breaker opens), the next ones do not call the provider at all and
// queue their chunks at once (ingest used to retry each call for 9 to 15 s), a vector search
// answers 503 at once; when the provider is back a probe closes the breaker and the worker embeds
// everything.
func TestIngestQueuesAtOnceWhileTheProviderIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	f := newFakeOpenAI(t)
	reg := prometheus.NewRegistry()
	breakerOpen := func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "tenantmem_embedding_breaker_open" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no tenantmem_embedding_breaker_open")
		return 0
	}
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, WorkerInterval: 10 * time.Millisecond, Registerer: reg,
		Embedding: embed.Config{Kind: embed.KindOpenAI, OpenAI: embed.OpenAIConfig{BaseURL: f.srv.URL, Model: "fake",
			MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
			Breaker: embed.BreakerConfig{Cooldown: 5 * time.Second}}}}) // five ingests and a search must fit in it
	res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "outage", Tier: registry.TierShared})
	require.NoError(t, err)
	key := res.Key.Key

	f.down.Store(true)
	before := f.requests.Load()
	add := func(i int) memory.DocumentAddResult {
		var added memory.DocumentAddResult
		require.Equal(t, http.StatusCreated, r.call(t, key, http.MethodPost, "/v1/documents", map[string]string{
			"document_name": fmt.Sprint("doc ", i), "document_type": "text", "content": fmt.Sprint("written during the outage, number ", i),
		}, &added))
		require.Positive(t, added.EmbeddingsPending)
		return added
	}
	add(0)
	require.LessOrEqual(t, f.requests.Load()-before, int64(embed.DefaultBreakerFailures),
		"the first ingest stops retrying once the breaker opens (it made 6 requests before)")
	before = f.requests.Load()
	for i := 1; i <= 5; i++ {
		add(i)
	}
	require.Equal(t, before, f.requests.Load(), "no request while the breaker is open")
	require.EqualValues(t, 1, breakerOpen())
	require.Equal(t, http.StatusServiceUnavailable, r.call(t, key, http.MethodPost, "/v1/search",
		map[string]string{"query_text": "outage", "search_type": "vector"}, nil))

	f.down.Store(false)
	waitUntil(t, 30*time.Second, "the worker to embed what the outage queued", func() bool {
		var st memory.EmbeddingQueueStats
		require.Equal(t, http.StatusOK, r.call(t, key, http.MethodGet, "/v1/embeddings/status", nil, &st))
		require.Zero(t, st.Failed, "an outage fails no job")
		return st.Pending == 0
	})
	var sr memory.SearchResponse
	require.Equal(t, http.StatusOK, r.call(t, key, http.MethodPost, "/v1/search",
		map[string]string{"query_text": "outage number", "search_type": "vector"}, &sr))
	require.Len(t, sr.Results, 6)
	require.Zero(t, breakerOpen())
}

// TestConnectionsAreRecycledAfterMaxConnSchemas: a pooled connection that served more than
// MaxConnSchemas distinct schemas is closed when released, so no backend keeps the catalog cache
// of every tenant schema; with no budget, the one connection serves them all.
func TestConnectionsAreRecycledAfterMaxConnSchemas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		given  int // MaxConnSchemas
		expect func(recycled uint64) bool
	}{
		{given: 2, expect: func(n uint64) bool { return n >= 2 }}, // 6 schemas, at most 3 per connection
		{given: -1, expect: func(n uint64) bool { return n == 0 }},
	} {
		d := newDeployment(t)
		r := start(t, dataplane.Config{DatabaseURL: d.routerURL, MaxConns: 1, MaxConnSchemas: tc.given, Provider: newFlaky(t)})
		for i := range 6 {
			res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprint("recycle", i), Tier: registry.TierSchema})
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, r.call(t, res.Key.Key, http.MethodGet, "/v1/statistics", nil, nil))
		}
		// A connection is recycled when it is released, which may come just after the answer.
		if tc.given > 0 {
			waitUntil(t, 10*time.Second, fmt.Sprintf("budget %d: connections recycled", tc.given), func() bool { return tc.expect(r.svc.RecycledConns()) })
		}
		require.True(t, tc.expect(r.svc.RecycledConns()), "budget %d: %d recycled", tc.given, r.svc.RecycledConns())
	}
}

// TestReadinessReportsPartsWithoutFailing: /readyz answers from the registry's own pool, so one
// tenant holding its tier's share (here: a lock on its table) neither delays nor fails it; the
// body says how each tier's share and each pool are used.
func TestReadinessReportsPartsWithoutFailing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: newFlaky(t), MaxConns: 4, TierMaxConns: 2,
		AcquireWait: 200 * time.Millisecond, Limits: limit.Limits{MaxConcurrent: limit.Unlimited}})
	res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "stuck", Tier: registry.TierSchema})
	require.NoError(t, err)
	key := res.Key.Key
	require.Equal(t, http.StatusOK, r.call(t, key, http.MethodGet, "/v1/statistics", nil, nil))
	tx, err := d.admin.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `LOCK TABLE `+pgx.Identifier{res.Tenant.SchemaName, "documents"}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	codes := make(chan int, 2)
	for range 2 {
		go func() { codes <- r.call(t, key, http.MethodGet, "/v1/statistics", nil, nil) }()
	}
	var ready struct {
		Status  string                 `json:"status"`
		Details dataplane.ReadyDetails `json:"details"`
	}
	waitUntil(t, 30*time.Second, "the tier's share to fill", func() bool {
		require.Equal(t, http.StatusOK, r.call(t, "", http.MethodGet, "/readyz", nil, &ready))
		return ready.Details.Tiers["schema"].InUse == 2
	})
	require.Equal(t, "ready", ready.Status)
	require.Equal(t, "listening", ready.Details.Listener)
	require.Equal(t, dataplane.GateDetails{InUse: 0, Size: 2}, ready.Details.Tiers["shared"])
	require.EqualValues(t, 4, ready.Details.Pool.Max)
	// A third request of the tier: the share is full, a bounded wait, then 503.
	require.Equal(t, http.StatusServiceUnavailable, r.call(t, key, http.MethodGet, "/v1/statistics", nil, nil))
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, http.StatusOK, <-codes)
	require.Equal(t, http.StatusOK, <-codes)
}
