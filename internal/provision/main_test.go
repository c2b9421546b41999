package provision_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one initialised deployment in its own database.
type env struct {
	url    string // superuser URL of the test database
	pool   *pgxpool.Pool
	router *pgxpool.Pool // logged in as the router role
	prov   *provision.Provisioner
}

func newEnv(t *testing.T, hook func(ctx context.Context, step, tenantID string) error) *env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	prov, err := provision.New(provision.Config{Pool: pool, Logger: testLogger(t), Hook: hook})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	router, err := pgxpool.New(ctx, pgtest.WithUser(t, url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(router.Close)
	return &env{url: url, pool: pool, router: router, prov: prov}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
