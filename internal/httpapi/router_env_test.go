package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/rerank"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// routerTestDim is the embedding dimension of router test deployments: small, so tests are fast.
const routerTestDim = 64

// switchEmbedder is the builtin embedder, failing with err while one is set, and blocking while
// a gate is set (until the gate is closed or the call's context ends).
type switchEmbedder struct {
	embed.Provider
	err  atomic.Pointer[error]
	gate atomic.Pointer[chan struct{}]
	// blocked counts the calls waiting at the gate.
	blocked atomic.Int64
}

func (s *switchEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if g := s.gate.Load(); g != nil {
		s.blocked.Add(1)
		select {
		case <-*g:
		case <-ctx.Done():
		}
		s.blocked.Add(-1)
	}
	if p := s.err.Load(); p != nil {
		return nil, *p
	}
	return s.Provider.Embed(ctx, texts)
}

// hold makes every call block until the returned function is called.
func (s *switchEmbedder) hold() (release func()) {
	g := make(chan struct{})
	s.gate.Store(&g)
	return func() {
		s.gate.Store(nil)
		close(g)
	}
}

// failWith makes every call fail with err; nil heals the provider.
func (s *switchEmbedder) failWith(err error) {
	if err == nil {
		s.err.Store(nil)
		return
	}
	s.err.Store(&err)
}

// ingestEvent is one OnIngest call.
type ingestEvent struct {
	tenantID string
	pending  int
}

// routerEnv is the router over real HTTP on its own initialised database: the router logs in as
// the router role, and routing.Listen applies registry notifications, as in production.
type routerEnv struct {
	t        *testing.T
	url      string
	admin    *pgxpool.Pool // superuser: setup and inspection only
	prov     *provision.Provisioner
	resolver *routing.Resolver
	engine   *memory.Engine
	embedder *switchEmbedder
	srv      *httptest.Server
	reg      *prometheus.Registry
	logs     *logBuffer

	mu      sync.Mutex
	ingests []ingestEvent
}

// routerOptions change a routerEnv's router.
type routerOptions struct {
	bodyLimit int64
	ready     func(context.Context) error
	// maxConns sizes the router pool (default pgxpool's); tierMaxConns, when set, gives each tier
	// a gate of that size; acquireWait bounds the wait for a connection.
	maxConns     int32
	tierMaxConns int
	acquireWait  time.Duration
	// limits are the default tenant limits (zero: limit's defaults).
	limits         limit.Limits
	requestTimeout time.Duration
	queueWait      time.Duration
	// aloneMaxConcurrent is RouterConfig.AloneMaxConcurrent (zero: the default, 8).
	aloneMaxConcurrent int
	// noListener leaves the resolver without a LISTEN (a lost notification, for ever).
	noListener bool
	// rerankURL, when set, is the base URL of the reranker the engine calls.
	rerankURL string
}

func newRouterEnv(t *testing.T) *routerEnv {
	t.Helper()
	return newRouterEnvWith(t, routerOptions{})
}

func newRouterEnvWith(t *testing.T, opts routerOptions) *routerEnv {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	logs := &logBuffer{t: t}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: routerTestDim})
	require.NoError(t, err)

	routerURL := pgtest.WithUser(t, url, provision.DefaultRouterRole, "")
	pc, err := pgxpool.ParseConfig(routerURL)
	require.NoError(t, err)
	if opts.maxConns > 0 {
		pc.MaxConns = opts.maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// Registry reads have a pool of their own, as in the dataplane.
	registryPool, err := pgxpool.New(ctx, routerURL)
	require.NoError(t, err)
	t.Cleanup(registryPool.Close)
	var gates map[registry.Tier]*limit.Gate
	if opts.tierMaxConns > 0 {
		gates = map[registry.Tier]*limit.Gate{
			registry.TierShared: limit.NewGate("shared tier connection", opts.tierMaxConns),
			registry.TierSchema: limit.NewGate("schema tier connection", opts.tierMaxConns),
		}
	}
	resolver, err := routing.New(routing.Config{Pool: pool, Registry: registryPool, Gates: gates, AcquireWait: opts.acquireWait})
	require.NoError(t, err)

	if !opts.noListener {
		listenRegistry(t, routerURL, resolver)
	}

	builtin, err := embed.NewBuiltin(routerTestDim)
	require.NoError(t, err)
	embedder := &switchEmbedder{Provider: builtin}
	mc := memory.Config{Embedder: embedder, Logger: logger, RerankTimeout: 2 * time.Second}
	if opts.rerankURL != "" {
		rr, err := rerank.New(rerank.Config{BaseURL: opts.rerankURL})
		require.NoError(t, err)
		mc.Reranker = rr
	}
	engine, err := memory.New(mc)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	e := &routerEnv{t: t, url: url, admin: admin, prov: prov, resolver: resolver, engine: engine, embedder: embedder, reg: reg, logs: logs}
	if opts.limits == (limit.Limits{}) {
		// Tests that do not test limits must not trip them.
		opts.limits = limit.Limits{RequestsPerSecond: limit.Unlimited, Burst: limit.Unlimited, MaxConcurrent: limit.Unlimited,
			MaxDocuments: limit.Unlimited, MaxChunks: limit.Unlimited, MaxContentBytes: limit.Unlimited}
	}
	ready := opts.ready
	if ready == nil {
		ready = httpapi.RegistryReady(pool)
	}
	h, err := httpapi.NewRouter(httpapi.RouterConfig{
		Resolver: resolver, Engine: engine, Logger: logger, Registerer: reg,
		BodyLimit: opts.bodyLimit, StatementTimeout: time.Minute, Ready: ready,
		Limits: opts.limits, RequestTimeout: opts.requestTimeout, QueueWait: opts.queueWait, AloneMaxConcurrent: opts.aloneMaxConcurrent,
		OnIngest: func(h *routing.Handle, n int) {
			e.mu.Lock()
			e.ingests = append(e.ingests, ingestEvent{tenantID: h.TenantID, pending: n})
			e.mu.Unlock()
		},
	})
	require.NoError(t, err)
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// tenant creates a tenant and returns its API key.
func (e *routerEnv) tenant(id string, tier registry.Tier) string {
	e.t.Helper()
	res, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: id, Tier: tier})
	require.NoError(e.t, err)
	return res.Key.Key
}

// do sends a request with "Authorization: Bearer key" (none when key is empty). body is sent as
// is when it is a string or []byte, else as JSON; nil sends no body.
func (e *routerEnv) do(t *testing.T, key, method, path string, body any) response {
	t.Helper()
	h := map[string]string{}
	if key != "" {
		h["Authorization"] = "Bearer " + key
	}
	return e.doWith(t, method, path, body, h)
}

func (e *routerEnv) doWith(t *testing.T, method, path string, body any, header map[string]string) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// ok sends a request that must answer want and decodes the answer into v (when not nil).
func (e *routerEnv) ok(t *testing.T, key, method, path string, body any, want int, v any) response {
	t.Helper()
	res := e.do(t, key, method, path, body)
	require.Equal(t, want, res.status, "%s %s: %s", method, path, res.body)
	if v != nil {
		res.decode(t, v)
	}
	return res
}

// stats is GET /v1/statistics of a tenant.
func (e *routerEnv) stats(t *testing.T, key string) memory.Statistics {
	t.Helper()
	var st memory.Statistics
	e.ok(t, key, http.MethodGet, "/v1/statistics", nil, http.StatusOK, &st)
	return st
}

// requireNothingStored checks through the API that a tenant has no document, chunk or queued
// embedding, and through the superuser that its schema holds no row of it either.
func (e *routerEnv) requireNothingStored(t *testing.T, key, tenantID string) {
	t.Helper()
	st := e.stats(t, key)
	require.Zero(t, st.DocumentCount, "documents")
	require.Zero(t, st.ChunkCount, "chunks")
	require.Zero(t, st.EmbeddingsPending+st.EmbeddingsFailed, "embedding jobs")
	tn, err := e.prov.GetTenant(context.Background(), tenantID)
	require.NoError(t, err)
	var rows int
	require.NoError(t, e.admin.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM `+pgx.Identifier{tn.SchemaName, "documents"}.Sanitize()+` WHERE owner_id = $1) +
		(SELECT count(*) FROM `+pgx.Identifier{tn.SchemaName, "chunks"}.Sanitize()+` WHERE owner_id = $1)`,
		tenantID).Scan(&rows))
	require.Zero(t, rows, "rows in %s", tn.SchemaName)
}

// ingested returns the OnIngest calls so far.
func (e *routerEnv) ingested() []ingestEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]ingestEvent(nil), e.ingests...)
}

// waitUntil polls cond every few milliseconds until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errProviderDown = errors.Join(embed.ErrUnavailable, errors.New("test: provider down"))
