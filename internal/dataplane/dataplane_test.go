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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// TestServiceSweepsLeftoverWork: jobs queued before the service started (a crash, another
// replica) are found by the start-up sweep and embedded without any ingest.
func TestServiceSweepsLeftoverWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	routerPool, err := pgxpool.New(ctx, d.routerURL)
	require.NoError(t, err)
	t.Cleanup(routerPool.Close)
	p := newFlaky(t)
	engine, err := memory.New(memory.Config{Embedder: p})
	require.NoError(t, err)
	var scopes []memory.Scope
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "left-" + string(tier), Tier: tier})
		require.NoError(t, err)
		s := memory.Scope{Pool: routerPool, Schema: res.Tenant.SchemaName, OwnerID: res.Tenant.ID}
		p.failures.Store(1)
		added, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
			Content: "left behind by a crashed router"})
		require.NoError(t, err)
		require.Positive(t, added.EmbeddingsPending)
		scopes = append(scopes, s)
	}

	start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond})
	for _, s := range scopes {
		waitUntil(t, 30*time.Second, "the sweep to embed "+s.OwnerID, func() bool {
			st, err := engine.EmbeddingStats(ctx, s)
			require.NoError(t, err)
			return st.Pending == 0
		})
	}
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
