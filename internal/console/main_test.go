package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/console"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testToken = "console-test-admin-token-0123456789"

// env is the provisioner's HTTP server (admin API and console) on a fresh, initialised database.
type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	prov *provision.Provisioner
	srv  *httptest.Server
}

type envOption func(*console.Config)

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	logger := slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prov, err := provision.New(provision.Config{Pool: pool, Logger: logger, Actor: "admin-api"})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	e, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: testToken, Logger: logger})
	require.NoError(t, err)
	cfg := console.Config{Provisioner: prov, Pool: pool, AdminToken: testToken, Logger: logger}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := console.New(cfg)
	require.NoError(t, err)
	c.Mount(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &env{t: t, pool: pool, prov: prov, srv: srv}
}

type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// createTenants creates tenants, shared tier unless the id starts with "schema:".
func (e *env) createTenants(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		tier := registry.TierShared
		if s, ok := strings.CutPrefix(id, "schema:"); ok {
			id, tier = s, registry.TierSchema
		}
		_, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: id, Tier: tier})
		require.NoError(e.t, err)
	}
}

func (e *env) status(id string) registry.Status {
	e.t.Helper()
	tn, err := e.prov.GetTenant(context.Background(), id)
	require.NoError(e.t, err)
	return tn.Status
}

// browser is an HTTP client with a cookie jar that does not follow redirects, sending the
// headers a browser would on a same-origin form post unless told otherwise.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(e.t, err)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (b *browser) get(path string) resp {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	require.NoError(b.e.t, err)
	return b.do(req)
}

// post sends a form; header overrides the same-origin defaults (an empty value removes one).
func (b *browser) post(path string, form url.Values, header map[string]string) resp {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	require.NoError(b.e.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return b.do(req)
}

func (b *browser) do(req *http.Request) resp {
	b.e.t.Helper()
	res, err := b.c.Do(req)
	require.NoError(b.e.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.e.t, err)
	r := resp{status: res.StatusCode, header: res.Header, body: string(body)}
	if m := csrfField.FindStringSubmatch(r.body); m != nil {
		b.csrf = m[1]
	}
	return r
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login signs in and loads the tenants page (which holds the CSRF token).
func (b *browser) login() {
	b.e.t.Helper()
	r := b.post("/console/login", url.Values{"token": {testToken}}, nil)
	require.Equal(b.e.t, http.StatusSeeOther, r.status, r.body)
	r = b.get("/console/tenants")
	require.Equal(b.e.t, http.StatusOK, r.status, r.body)
	require.NotEmpty(b.e.t, b.csrf)
}
