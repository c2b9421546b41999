package provision_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
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
	return newEnvOn(t, pgtest.Existing(pgtest.ServerURL()), hook)
}

// newEnvOn is newEnv on a fresh database of server.
func newEnvOn(t *testing.T, server *pgtest.Server, hook func(ctx context.Context, step, tenantID string) error) *env {
	t.Helper()
	ctx := context.Background()
	url := server.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	prov, err := provision.New(provision.Config{Pool: pool, Logger: testLogger(t), Hook: hook, Credentials: testCredentials(t)})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	router, err := pgxpool.New(ctx, pgtest.WithUser(t, url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(router.Close)
	e := &env{url: url, pool: pool, router: router, prov: prov}
	pgtest.DropDatabasesOnCleanup(t, server.URL(), e.databaseMarker(t))
	return e
}

// testCredentials are the provisioner's credentials on every test server: the clusters trust
// loopback, so the superuser with no password.
func testCredentials(t testing.TB) placement.Credentials {
	t.Helper()
	c, err := placement.ParseCredentials(strings.NewReader("*:provisioner:postgres:\n*:router:tenantmem_router:\n"))
	require.NoError(t, err)
	return c
}

// databaseMarker is the start of the comment of every tenant database of the deployment.
func (e *env) databaseMarker(t *testing.T) string {
	t.Helper()
	s, err := registry.GetSettings(context.Background(), e.pool)
	require.NoError(t, err)
	return "tenantmem deployment " + s.DeploymentID + " "
}

// addPlacement registers a placement on a fresh database of server, dropping the tenant
// databases the test leaves there when it ends.
func (e *env) addPlacement(t *testing.T, name string, server *pgtest.Server) registry.Placement {
	t.Helper()
	u, err := url.Parse(server.NewDatabase(t))
	require.NoError(t, err)
	pgtest.DropDatabasesOnCleanup(t, server.URL(), e.databaseMarker(t))
	pl, err := e.prov.AddPlacement(context.Background(), provision.PlacementAddParams{
		Name: name, Host: server.Host(), Port: server.Port(), Database: strings.TrimPrefix(u.Path, "/"),
	})
	require.NoError(t, err)
	return pl
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
