package memory_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testDim is the embedding dimension of test deployments: small, so tests are fast.
const testDim = 64

// env is one initialised deployment in its own database, with pools as superuser and as the
// router role.
type env struct {
	url    string
	admin  *pgxpool.Pool // superuser: for test setup and inspection only
	router *pgxpool.Pool // the router role: every engine call goes through it
	prov   *provision.Provisioner
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvDim(t, testDim)
}

// newEnvDim is newEnv with another embedding dimension (benchmarks use 384, the builtin
// embedder's default and that of common small sentence models).
func newEnvDim(t testing.TB, dim int) *env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin, Logger: testLogger(t)})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: dim})
	require.NoError(t, err)
	router, err := pgxpool.New(ctx, pgtest.WithUser(t, url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(router.Close)
	return &env{url: url, admin: admin, router: router, prov: prov}
}

var tenantSeq atomic.Int64

// tenant creates a tenant in tier and returns its scope on the router pool.
func (e *env) tenant(t testing.TB, tier registry.Tier) memory.Scope {
	t.Helper()
	id := fmt.Sprintf("t%d_%s", tenantSeq.Add(1), tier)
	res, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: id, Tier: tier})
	require.NoError(t, err)
	return memory.Scope{Pool: e.router, Schema: res.Tenant.SchemaName, OwnerID: id, StatementTimeout: time.Minute}
}

var tiers = []registry.Tier{registry.TierShared, registry.TierSchema}

func newBuiltin(t testing.TB) embed.Provider {
	t.Helper()
	b, err := embed.NewBuiltin(testDim)
	require.NoError(t, err)
	return b
}

func newEngine(t testing.TB, p embed.Provider, mods ...func(*memory.Config)) *memory.Engine {
	t.Helper()
	cfg := memory.Config{Embedder: p, Logger: testLogger(t)}
	for _, m := range mods {
		m(&cfg)
	}
	e, err := memory.New(cfg)
	require.NoError(t, err)
	return e
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
