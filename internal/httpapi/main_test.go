package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testToken = "test-admin-token-0123456789abcdef"

// adminEnv is the admin API over real HTTP on its own database.
type adminEnv struct {
	t    *testing.T
	pool *pgxpool.Pool
	prov *provision.Provisioner
	srv  *httptest.Server
	logs *logBuffer
	reg  *prometheus.Registry
}

// newAdminEnv starts the admin API on a fresh database, initialised unless told otherwise.
func newAdminEnv(t *testing.T, initialise bool) *adminEnv {
	t.Helper()
	return newAdminEnvWith(t, initialise, nil)
}

// newAdminEnvWith is newAdminEnv with a change to the admin API's configuration.
func newAdminEnvWith(t *testing.T, initialise bool, mod func(*httpapi.AdminConfig)) *adminEnv {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	logs := &logBuffer{t: t}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prov, err := provision.New(provision.Config{Pool: pool, Logger: logger, Credentials: testCredentials(t)})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	if initialise {
		_, err = prov.Init(ctx, provision.InitParams{})
		require.NoError(t, err)
	}
	reg := prometheus.NewRegistry()
	cfg := httpapi.AdminConfig{
		Provisioner: prov, Pool: pool, AdminToken: testToken, Logger: logger, Registerer: reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := httpapi.NewAdmin(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &adminEnv{t: t, pool: pool, prov: prov, srv: srv, logs: logs, reg: reg}
}

// testCredentials are the provisioner's and the router's credentials on every test server: the
// clusters trust loopback, so no password.
func testCredentials(t *testing.T) placement.Credentials {
	t.Helper()
	c, err := placement.ParseCredentials(strings.NewReader("*:provisioner:postgres:\n*:router:tenantmem_router:\n"))
	require.NoError(t, err)
	return c
}

// addPlacement registers a placement on a fresh database of server and drops the deployment's
// tenant databases on both servers when the test ends.
func addPlacement(t *testing.T, prov *provision.Provisioner, admin *pgxpool.Pool, name string, server *pgtest.Server) registry.Placement {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(server.NewDatabase(t))
	require.NoError(t, err)
	s, err := registry.GetSettings(ctx, admin)
	require.NoError(t, err)
	marker := "tenantmem deployment " + s.DeploymentID + " "
	pgtest.DropDatabasesOnCleanup(t, server.URL(), marker)
	pgtest.DropDatabasesOnCleanup(t, pgtest.ServerURL(), marker)
	pl, err := prov.AddPlacement(ctx, provision.PlacementAddParams{Name: name, Host: server.Host(), Port: server.Port(),
		Database: strings.TrimPrefix(u.Path, "/")})
	require.NoError(t, err)
	return pl
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// problem decodes an error body.
func (r response) problem(t *testing.T) httpapi.Problem {
	t.Helper()
	var b httpapi.ErrorBody
	require.NoError(t, json.Unmarshal(r.body, &b), string(r.body))
	require.Equal(t, r.status, statusOfCode(b.Error.Code), "status %d with code %q", r.status, b.Error.Code)
	return b.Error
}

func statusOfCode(code string) int {
	return map[string]int{
		httpapi.CodeInvalidInput: 400, httpapi.CodeUnauthorized: 401, httpapi.CodeForbidden: 403,
		httpapi.CodeNotFound: 404, httpapi.CodeMethodNotAllowed: 405, httpapi.CodeAlreadyExists: 409,
		httpapi.CodeConflict: 409, httpapi.CodePayloadTooLarge: 413, httpapi.CodeRateLimited: 429,
		httpapi.CodeQuotaExceeded: 413, httpapi.CodeIdempotencyReuse: 422,
		httpapi.CodeInternal: 500, httpapi.CodeUnavailable: 503,
	}[code]
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), string(r.body))
}

// do sends a request with the admin token. body is sent as is when it is a string or []byte,
// else as JSON; nil sends no body.
func (e *adminEnv) do(method, path string, body any) response {
	e.t.Helper()
	return e.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + testToken})
}

func (e *adminEnv) doWith(method, path string, body any, header map[string]string) response {
	e.t.Helper()
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
		require.NoError(e.t, err)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	require.NoError(e.t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// tenantCount is the number of registry entries.
func (e *adminEnv) tenantCount() int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM tenantmem_control.tenants`).Scan(&n))
	return n
}

// requireNothingCreated checks that no tenant, key, tenant schema or audit event exists.
func (e *adminEnv) requireNothingCreated() {
	e.t.Helper()
	ctx := context.Background()
	var tenants, keys, schemas, events int
	require.NoError(e.t, e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM tenantmem_control.tenants),
		(SELECT count(*) FROM tenantmem_control.api_keys),
		(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'),
		(SELECT count(*) FROM tenantmem_control.audit_log)`).Scan(&tenants, &keys, &schemas, &events))
	require.Zero(e.t, tenants, "tenants")
	require.Zero(e.t, keys, "api keys")
	require.Zero(e.t, schemas, "tenant schemas")
	require.Zero(e.t, events, "audit events")
}

// logBuffer keeps the JSON log lines of a test and passes them to t.Log.
type logBuffer struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.lines = append(b.lines, string(p))
	b.mu.Unlock()
	b.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// records returns the decoded log records whose msg is msg.
func (b *logBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range b.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// scrape is what GET /metrics of the metrics listener serves from reg.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	httpapi.MetricsHandler(reg, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}
