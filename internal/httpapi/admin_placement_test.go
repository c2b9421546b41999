package httpapi_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestAdminPlacements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAdminEnv(t, true)
	second := pgtest.Second(t)
	u, err := url.Parse(second.NewDatabase(t))
	require.NoError(t, err)
	db := strings.TrimPrefix(u.Path, "/")
	s, err := registry.GetSettings(ctx, e.pool)
	require.NoError(t, err)
	pgtest.DropDatabasesOnCleanup(t, second.URL(), "tenantmem deployment "+s.DeploymentID+" ")
	body := map[string]any{"name": "p2", "host": second.Host(), "port": second.Port(), "database": db,
		"max_tenants": 3, "tiers": []string{"schema", "database"}}

	res := e.do(http.MethodPost, "/v1/placements", body)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	require.Equal(t, "/v1/placements/p2", res.header.Get("Location"))
	var pl registry.Placement
	res.decode(t, &pl)
	require.Equal(t, registry.PlacementActive, pl.State)
	require.Equal(t, []registry.Tier{registry.TierSchema, registry.TierDatabase}, pl.Tiers)

	var list httpapi.PlacementListResponse
	res = e.do(http.MethodGet, "/v1/placements", nil)
	require.Equal(t, http.StatusOK, res.status)
	res.decode(t, &list)
	require.Len(t, list.Placements, 2)

	// A tenant of each tier the placement takes; the one it does not take is 400 naming tier.
	for _, tier := range []string{"schema", "database"} {
		res = e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "t-" + tier, "tier": tier, "placement": "p2"})
		require.Equal(t, http.StatusCreated, res.status, string(res.body))
	}
	res = e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "t-shared", "tier": "shared", "placement": "p2"})
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Equal(t, "tier", res.problem(t).Field)
	res = e.do(http.MethodGet, "/v1/placements/p2", nil)
	res.decode(t, &pl)
	require.Equal(t, 2, pl.Tenants)

	// States.
	res = e.do(http.MethodPost, "/v1/placements/p2/drain", nil)
	require.Equal(t, http.StatusOK, res.status)
	var pr httpapi.PlacementResponse
	res.decode(t, &pr)
	require.Equal(t, registry.PlacementDraining, pr.Placement.State)
	res = e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "t-more", "tier": "schema", "placement": "p2"})
	require.Equal(t, http.StatusConflict, res.status)
	require.Contains(t, res.problem(t).Message, `placement "p2" is draining`)
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/v1/placements/p2/disable", nil).status)
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/v1/placements/p2/activate", nil).status)

	// Remove: 409 while it holds tenants, 204 once empty, 404 after.
	res = e.do(http.MethodDelete, "/v1/placements/p2", nil)
	require.Equal(t, http.StatusConflict, res.status)
	require.Contains(t, res.problem(t).Message, "still holds 2 tenants")
	require.Equal(t, http.StatusConflict, e.do(http.MethodDelete, "/v1/placements/local", nil).status)
	for _, id := range []string{"t-schema", "t-database"} {
		require.Equal(t, http.StatusNoContent, e.do(http.MethodDelete, "/v1/tenants/"+id, nil).status)
	}
	require.Equal(t, http.StatusNoContent, e.do(http.MethodDelete, "/v1/placements/p2", nil).status)
	res = e.do(http.MethodGet, "/v1/placements/p2", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	require.Equal(t, `placement "p2" not found`, res.problem(t).Message)

	// Bad input: 400 naming the field, nothing registered.
	with := func(k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range body {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		given string
		body  any
		field string
	}{
		{"no name", with("name", nil), "placement"},
		{"name not an identifier", with("name", "P 2"), "placement"},
		{"local", with("name", "local"), "placement"},
		{"no host", with("host", nil), "host"},
		{"host list", with("host", "a,b"), "host"},
		{"port 0", with("port", 0), "port"},
		{"port as text", with("port", "5432"), "port"},
		{"database with a quote", with("database", `a"b`), "database"},
		{"unknown tier", with("tiers", []string{"gold"}), "tiers"},
		{"no tiers", with("tiers", []string{}), "tiers"},
		{"negative capacity", with("max_tenants", -1), "max_tenants"},
		{"unknown field", with("password", "x"), "password"},
	} {
		res := e.do(http.MethodPost, "/v1/placements", tc.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", tc.given, res.body)
		require.Equal(t, tc.field, res.problem(t).Field, tc.given)
	}
	for _, path := range []string{"/v1/placements/P2", "/v1/placements/a%20b", "/v1/placements/x/drain%27"} {
		res := e.do(http.MethodGet, path, nil)
		require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed}, res.status, path)
	}
	require.Equal(t, http.StatusBadRequest, e.do(http.MethodPost, "/v1/placements/P2/drain", nil).status)

	// An unreachable server: 503 with Retry-After naming the placement, nothing registered.
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	res = e.do(http.MethodPost, "/v1/placements", with("port", port))
	require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
	require.NotEmpty(t, res.header.Get("Retry-After"))
	require.Contains(t, res.problem(t).Message, `placement "p2": cannot connect`)
	res = e.do(http.MethodGet, "/v1/placements", nil)
	res.decode(t, &list)
	require.Len(t, list.Placements, 1)
	// Without the admin token: 401.
	require.Equal(t, http.StatusUnauthorized, e.doWith(http.MethodGet, "/v1/placements", nil, nil).status)
}

// TestAddPlacementRefusesBadInputBeforeTouchingTheServer: each bad field is a 400 naming it, no
// placement is registered, the target server's roles are not altered, and the router password
// never appears in an answer or a log line. Found by review: max_tenants beyond int32 and a NUL in
// the description were 500s after the server had been prepared, a NUL in the password was a 503
// whose log line carried the password, and tiers [""] meant "all three".
func TestAddPlacementRefusesBadInputBeforeTouchingTheServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAdminEnv(t, true)
	second := pgtest.Second(t)
	u, err := url.Parse(second.NewDatabase(t))
	require.NoError(t, err)
	db := strings.TrimPrefix(u.Path, "/")
	s, err := registry.GetSettings(ctx, e.pool)
	require.NoError(t, err)
	pgtest.DropDatabasesOnCleanup(t, second.URL(), "tenantmem deployment "+s.DeploymentID+" ")
	const secret = "Sup3rS3cret"
	body := func(k string, v any) map[string]any {
		b := map[string]any{"name": "p2", "host": second.Host(), "port": second.Port(), "database": db}
		b[k] = v
		return b
	}
	for _, tc := range []struct {
		given string
		body  map[string]any
		field string
	}{
		{"max_tenants beyond the column", body("max_tenants", 4294967296), "max_tenants"},
		{"a NUL in the description", body("description", "a\u0000b"), "description"},
		{"a NUL in the router password", body("router_password", secret+"\u0000tail"), "router_password"},
		{"an overlong router password", body("router_password", secret+strings.Repeat("x", 1100)), "router_password"},
		{"an empty tier name", body("tiers", []string{""}), "tiers"},
		{"an empty tier among others", body("tiers", []string{"schema", ""}), "tiers"},
	} {
		t.Run(tc.given, func(t *testing.T) {
			res := e.do(http.MethodPost, "/v1/placements", tc.body)
			require.Equal(t, http.StatusBadRequest, res.status, string(res.body))
			require.Equal(t, tc.field, res.problem(t).Field)
			require.NotContains(t, string(res.body), secret)
		})
	}
	for _, l := range e.logs.lines {
		require.NotContains(t, l, secret, "a password in a log line")
	}
	var n int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM tenantmem_control.placements WHERE placement_id = 'p2'`).Scan(&n))
	require.Zero(t, n, "nothing registered")
	// The target server was not prepared: it has no shared schema of ours.
	target, err := pgx.Connect(ctx, u.String())
	require.NoError(t, err)
	defer func() { _ = target.Close(ctx) }()
	require.NoError(t, target.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantmem_shared'`).Scan(&n))
	require.Zero(t, n, "the server was not touched")
}
