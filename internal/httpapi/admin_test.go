package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

type createResponse struct {
	Tenant registry.Tenant    `json:"tenant"`
	Key    registry.IssuedKey `json:"api_key"`
}

func TestAdminTenantLifecycle(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	ctx := context.Background()

	// Create, in both tiers.
	res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": "acme", "tier": "schema"})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	require.Equal(t, "/v1/tenants/acme", res.header.Get("Location"))
	var created createResponse
	res.decode(t, &created)
	require.Equal(t, "acme", created.Tenant.ID)
	require.Equal(t, registry.TierSchema, created.Tenant.Tier)
	require.Equal(t, "tenant_acme", created.Tenant.SchemaName)
	require.Equal(t, registry.StatusActive, created.Tenant.Status)
	require.Positive(t, created.Tenant.MigrationVersion)
	require.True(t, strings.HasPrefix(created.Key.Key, "tm_"+created.Key.KeyID+"_"), created.Key.Key)
	require.Equal(t, "acme", created.Key.TenantID)
	// The clear key works.
	got, keyID, err := registry.Authenticate(ctx, e.pool, created.Key.Key)
	require.NoError(t, err)
	require.Equal(t, "acme", got.ID)
	require.Equal(t, created.Key.KeyID, keyID)

	res = e.do(http.MethodPost, "/v1/tenants", `{"tenant_id": "small-co", "tier": "shared"}`)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var shared createResponse
	res.decode(t, &shared)
	require.Equal(t, registry.TierShared, shared.Tenant.Tier)

	// List and show.
	res = e.do(http.MethodGet, "/v1/tenants", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	var list httpapi.TenantListResponse
	res.decode(t, &list)
	require.Equal(t, []string{"acme", "small-co"}, tenantIDs(list.Tenants))
	require.Empty(t, list.NextAfter)
	require.NotContains(t, string(res.body), "next_after")

	res = e.do(http.MethodGet, "/v1/tenants/acme", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	var shown registry.Tenant
	res.decode(t, &shown)
	require.Equal(t, created.Tenant, shown)

	// Suspend and resume, each twice (the second is a no-op).
	for _, step := range []struct {
		action string
		want   registry.Status
	}{
		{"suspend", registry.StatusSuspended}, {"suspend", registry.StatusSuspended},
		{"resume", registry.StatusActive}, {"resume", registry.StatusActive},
	} {
		res = e.do(http.MethodPost, "/v1/tenants/acme/"+step.action, nil)
		require.Equal(t, http.StatusOK, res.status, string(res.body))
		var tr httpapi.TenantResponse
		res.decode(t, &tr)
		require.Equal(t, step.want, tr.Tenant.Status, step.action)
		shown, err := e.prov.GetTenant(ctx, "acme")
		require.NoError(t, err)
		require.Equal(t, step.want, shown.Status)
	}

	// Keys: issue, list (no secrets), revoke.
	res = e.do(http.MethodPost, "/v1/tenants/acme/keys", nil)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var issued registry.IssuedKey
	res.decode(t, &issued)
	require.Equal(t, "acme", issued.TenantID)
	require.NotEmpty(t, issued.Key)
	_, _, err = registry.Authenticate(ctx, e.pool, issued.Key)
	require.NoError(t, err)

	res = e.do(http.MethodGet, "/v1/tenants/acme/keys", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	require.NotContains(t, string(res.body), issued.Key)
	require.NotContains(t, string(res.body), "api_key")
	var keys httpapi.KeyListResponse
	res.decode(t, &keys)
	require.ElementsMatch(t, []string{created.Key.KeyID, issued.KeyID}, keyIDs(keys.Keys))

	res = e.do(http.MethodDelete, "/v1/tenants/acme/keys/"+issued.KeyID, nil)
	require.Equal(t, http.StatusNoContent, res.status, string(res.body))
	require.Empty(t, res.body)
	_, _, err = registry.Authenticate(ctx, e.pool, issued.Key)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
	res = e.do(http.MethodGet, "/v1/tenants/acme/keys", nil)
	res.decode(t, &keys)
	for _, k := range keys.Keys {
		require.Equal(t, k.KeyID == issued.KeyID, k.RevokedAt != nil, k.KeyID)
	}

	// Delete.
	res = e.do(http.MethodDelete, "/v1/tenants/acme", nil)
	require.Equal(t, http.StatusNoContent, res.status, string(res.body))
	res = e.do(http.MethodGet, "/v1/tenants/acme", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	require.Equal(t, httpapi.CodeNotFound, res.problem(t).Code)
	res = e.do(http.MethodDelete, "/v1/tenants/acme", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	var schemas int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_acme'`).Scan(&schemas))
	require.Zero(t, schemas)
	res = e.do(http.MethodGet, "/v1/tenants", nil)
	res.decode(t, &list)
	require.Equal(t, []string{"small-co"}, tenantIDs(list.Tenants))

	// The access log names method, route template, status, latency, request id and tenant.
	var found bool
	for _, rec := range e.logs.records("http request") {
		if rec["route"] == "/v1/tenants/:id/suspend" {
			found = true
			require.Equal(t, "POST", rec["method"])
			require.EqualValues(t, 200, rec["status"])
			require.Equal(t, "acme", rec["tenant_id"])
			require.NotEmpty(t, rec["request_id"])
			require.Contains(t, rec, "latency_ms")
		}
	}
	require.True(t, found, "access log line for suspend")
}

func TestAdminRequiresTheToken(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	_, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: "acme", Tier: registry.TierShared})
	require.NoError(t, err)

	routes := []struct{ method, path, body string }{
		{http.MethodPost, "/v1/tenants", `{"tenant_id": "intruder", "tier": "shared"}`},
		{http.MethodGet, "/v1/tenants", ""},
		{http.MethodGet, "/v1/tenants/acme", ""},
		{http.MethodDelete, "/v1/tenants/acme", ""},
		{http.MethodPost, "/v1/tenants/acme/suspend", ""},
		{http.MethodPost, "/v1/tenants/acme/resume", ""},
		{http.MethodPost, "/v1/tenants/acme/keys", ""},
		{http.MethodGet, "/v1/tenants/acme/keys", ""},
		{http.MethodDelete, "/v1/tenants/acme/keys/aaaaaaaaaaaaaaaa", ""},
	}
	for _, tc := range []struct {
		given  string
		header map[string]string
	}{
		{"no header", nil},
		{"empty header", map[string]string{"Authorization": ""}},
		{"basic scheme", map[string]string{"Authorization": "Basic " + testToken}},
		{"bearer without token", map[string]string{"Authorization": "Bearer "}},
		{"bare token", map[string]string{"Authorization": testToken}},
		{"wrong token", map[string]string{"Authorization": "Bearer wrong-token-0123456789abcdef"}},
		{"token prefix", map[string]string{"Authorization": "Bearer " + testToken[:len(testToken)-1]}},
		{"token with suffix", map[string]string{"Authorization": "Bearer " + testToken + "x"}},
		{"token with extra space", map[string]string{"Authorization": "Bearer  " + testToken}},
	} {
		for _, r := range routes {
			var body any
			if r.body != "" {
				body = r.body
			}
			res := e.doWith(r.method, r.path, body, tc.header)
			require.Equal(t, http.StatusUnauthorized, res.status, "%s: %s %s", tc.given, r.method, r.path)
			require.Equal(t, httpapi.CodeUnauthorized, res.problem(t).Code)
			require.Contains(t, res.header.Get("WWW-Authenticate"), "Bearer")
		}
	}
	// Nothing changed.
	tn, err := e.prov.GetTenant(context.Background(), "acme")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, tn.Status)
	require.Equal(t, 1, e.tenantCount())

	// The scheme is case-insensitive; health endpoints need no token.
	res := e.doWith(http.MethodGet, "/v1/tenants", nil, map[string]string{"Authorization": "bearer " + testToken})
	require.Equal(t, http.StatusOK, res.status)
	for _, p := range []string{"/healthz", "/readyz"} {
		require.Equal(t, http.StatusOK, e.doWith(http.MethodGet, p, nil, nil).status, p)
	}
	// Metrics have their own listener: the admin port does not serve them.
	require.Equal(t, http.StatusNotFound, e.doWith(http.MethodGet, "/metrics", nil, nil).status)
}

// badTenantIDs are the ids every route must reject with 400, as (name, clear id).
var badTenantIDs = []struct{ name, id string }{
	{"empty", ""},
	{"256 characters", strings.Repeat("a", 256)},
	{"space", "a b"},
	{"semicolon", "x;drop"},
	{"traversal", "../"},
	{"dot dot", ".."},
	{"trailing newline", "acme\n"},
	{"unicode", "café"},
	{"empty segment", "org//ws"},
	{"trailing slash", "org/"},
}

func TestAdminRejectsBadTenantIDs(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)

	for _, tc := range badTenantIDs {
		// In the body of a create.
		for _, tier := range []string{"shared", "schema"} {
			res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": tc.id, "tier": tier})
			require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", tc.name, res.body)
			p := res.problem(t)
			require.Equal(t, "tenant_id", p.Field, tc.name)
			require.Contains(t, p.Message, "tenant_id", tc.name)
			require.Contains(t, p.Message, "invalid tenant id", tc.name)
		}
		// In the path of every tenant route, escaped as a client would.
		path := "/v1/tenants/" + url.PathEscape(tc.id)
		for _, r := range []struct{ method, suffix string }{
			{http.MethodGet, ""}, {http.MethodDelete, ""}, {http.MethodPost, "/suspend"}, {http.MethodPost, "/resume"},
			{http.MethodPost, "/keys"}, {http.MethodGet, "/keys"}, {http.MethodDelete, "/keys/aaaaaaaaaaaaaaaa"},
		} {
			if tc.id == "" && r.suffix == "" {
				continue // "/v1/tenants/" is not a tenant route; covered by the other suffixes
			}
			res := e.do(r.method, path+r.suffix, nil)
			require.Equal(t, http.StatusBadRequest, res.status, "%s: %s %s: %s", tc.name, r.method, path+r.suffix, res.body)
			require.Equal(t, "tenant_id", res.problem(t).Field)
		}
	}
	e.requireNothingCreated()
}

func TestAdminRejectsBadBodies(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)

	for _, tc := range []struct {
		given       string
		body        string
		expectField string
		expectText  string
	}{
		{"unknown tier", `{"tenant_id": "acme", "tier": "gold"}`, "tier", "unknown tier"},
		{"missing tier", `{"tenant_id": "acme"}`, "tier", "unknown tier"},
		{"unknown placement", `{"tenant_id": "acme", "tier": "database", "placement": "nowhere"}`, "placement", `unknown placement "nowhere"`},
		{"placement that is not a name", `{"tenant_id": "acme", "tier": "schema", "placement": "EU 1"}`, "placement", "not a placement name"},
		{"wrong type of placement", `{"tenant_id": "acme", "tier": "schema", "placement": 2}`, "placement", "must be a string"},
		{"unknown field", `{"tenant_id": "acme", "tier": "shared", "owner": "other"}`, "owner", "unknown field"},
		{"wrong type of tenant_id", `{"tenant_id": 42, "tier": "shared"}`, "tenant_id", "must be a string"},
		{"wrong type of tier", `{"tenant_id": "acme", "tier": ["shared"]}`, "tier", "must be a string"},
		{"array body", `[{"tenant_id": "acme", "tier": "shared"}]`, "body", "JSON object"},
		{"invalid JSON", `{"tenant_id": "acme", tier: "shared"}`, "body", "invalid JSON"},
		{"truncated JSON", `{"tenant_id": "acme", "tier": "shar`, "body", "truncated"},
		{"empty body", ``, "body", "empty"},
		{"two objects", `{"tenant_id": "acme", "tier": "shared"} {"tenant_id": "b", "tier": "shared"}`, "body", "after the JSON object"},
		{"trailing garbage", `{"tenant_id": "acme", "tier": "shared"} x`, "body", "after the JSON object"},
	} {
		res := e.do(http.MethodPost, "/v1/tenants", tc.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", tc.given, res.body)
		p := res.problem(t)
		require.Equal(t, httpapi.CodeInvalidInput, p.Code, tc.given)
		require.Equal(t, tc.expectField, p.Field, "%s: %s", tc.given, p.Message)
		require.Contains(t, p.Message, tc.expectText, tc.given)
		require.True(t, strings.HasPrefix(p.Message, tc.expectField+": "), "%s: message %q names the field", tc.given, p.Message)
	}
	e.requireNothingCreated()

	// Bad query parameters of the list.
	for _, q := range []string{"limit=0", "limit=1001", "limit=ten", "limit=-1", "after=" + url.QueryEscape("a b")} {
		res := e.do(http.MethodGet, "/v1/tenants?"+q, nil)
		require.Equal(t, http.StatusBadRequest, res.status, q)
		require.Equal(t, strings.Split(q, "=")[0], res.problem(t).Field, q)
	}
	// A malformed key id.
	_, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: "acme", Tier: registry.TierShared})
	require.NoError(t, err)
	res := e.do(http.MethodDelete, "/v1/tenants/acme/keys/NOT-A-KEY", nil)
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Equal(t, "key_id", res.problem(t).Field)
}

func TestAdminBodyLimit(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	big := `{"tenant_id": "` + strings.Repeat("a", int(httpapi.DefaultBodyLimit)) + `", "tier": "shared"}`

	// Known length: refused before reading.
	res := e.do(http.MethodPost, "/v1/tenants", big)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, string(res.body))
	require.Equal(t, httpapi.CodePayloadTooLarge, res.problem(t).Code)

	// Unknown length (chunked): refused while reading.
	res = e.do(http.MethodPost, "/v1/tenants", struct{ *strings.Reader }{strings.NewReader(big)})
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, string(res.body))
	require.Equal(t, httpapi.CodePayloadTooLarge, res.problem(t).Code)

	e.requireNothingCreated()

	// Just under the limit is read (and rejected for its content, not its size).
	ok := `{"tenant_id": "` + strings.Repeat("a", 1000) + `", "tier": "shared"}`
	res = e.do(http.MethodPost, "/v1/tenants", ok)
	require.Equal(t, http.StatusBadRequest, res.status)
}

func TestAdminNotFoundAndConflicts(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	ctx := context.Background()

	// Unknown tenant: 404 on every route.
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/v1/tenants/ghost"},
		{http.MethodDelete, "/v1/tenants/ghost"},
		{http.MethodPost, "/v1/tenants/ghost/suspend"},
		{http.MethodPost, "/v1/tenants/ghost/resume"},
		{http.MethodPost, "/v1/tenants/ghost/keys"},
		{http.MethodGet, "/v1/tenants/ghost/keys"},
		{http.MethodDelete, "/v1/tenants/ghost/keys/aaaaaaaaaaaaaaaa"},
	} {
		res := e.do(r.method, r.path, nil)
		require.Equal(t, http.StatusNotFound, res.status, "%s %s: %s", r.method, r.path, res.body)
		p := res.problem(t)
		require.Equal(t, httpapi.CodeNotFound, p.Code)
		require.Contains(t, p.Message, `"ghost"`)
	}
	e.requireNothingCreated()

	// Another tenant's key id is 404, and the key stays valid.
	a, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "alpha", Tier: registry.TierShared})
	require.NoError(t, err)
	b, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "beta", Tier: registry.TierSchema})
	require.NoError(t, err)
	res := e.do(http.MethodDelete, "/v1/tenants/alpha/keys/"+b.Key.KeyID, nil)
	require.Equal(t, http.StatusNotFound, res.status, string(res.body))
	require.Equal(t, httpapi.CodeNotFound, res.problem(t).Code)
	_, _, err = registry.Authenticate(ctx, e.pool, b.Key.Key)
	require.NoError(t, err)
	// An unknown key id of an existing tenant too.
	res = e.do(http.MethodDelete, "/v1/tenants/alpha/keys/zzzzzzzzzzzzzzzz", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	_, _, err = registry.Authenticate(ctx, e.pool, a.Key.Key)
	require.NoError(t, err)

	// Duplicates: 409 already_exists, whatever the tier, and nothing changes.
	for _, tier := range []string{"shared", "schema"} {
		for _, id := range []string{"alpha", "beta"} {
			res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": id, "tier": tier})
			require.Equal(t, http.StatusConflict, res.status, string(res.body))
			p := res.problem(t)
			require.Equal(t, httpapi.CodeAlreadyExists, p.Code)
			require.Contains(t, p.Message, id)
		}
	}
	keys, err := e.prov.ListKeys(ctx, "alpha")
	require.NoError(t, err)
	require.Len(t, keys, 1)

	// A tenant stuck in provisioning (a create that crashed half-way) cannot be suspended,
	// resumed or given keys: 409 conflict.
	crash := errors.New("simulated crash")
	crashing, err := provision.New(provision.Config{Pool: e.pool, Hook: func(_ context.Context, step, _ string) error {
		if step == provision.StepCreateRegistered {
			return crash
		}
		return nil
	}})
	require.NoError(t, err)
	_, err = crashing.CreateTenant(ctx, provision.TenantCreateParams{ID: "half", Tier: registry.TierSchema})
	require.ErrorIs(t, err, crash)
	for _, p := range []string{"/v1/tenants/half/suspend", "/v1/tenants/half/resume", "/v1/tenants/half/keys"} {
		res := e.do(http.MethodPost, p, nil)
		require.Equal(t, http.StatusConflict, res.status, "%s: %s", p, res.body)
		require.Equal(t, httpapi.CodeConflict, res.problem(t).Code)
	}
	// Creating it again finishes the job.
	res = e.do(http.MethodPost, "/v1/tenants", `{"tenant_id": "half", "tier": "schema"}`)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))

	// Unknown routes and methods answer in the same JSON shape.
	res = e.do(http.MethodGet, "/v1/nothing", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	require.Equal(t, httpapi.CodeNotFound, res.problem(t).Code)
	res = e.do(http.MethodPut, "/v1/tenants/alpha", nil)
	require.Equal(t, http.StatusMethodNotAllowed, res.status)
	require.Equal(t, httpapi.CodeMethodNotAllowed, res.problem(t).Code)
}

func TestAdminEscapedTenantIDs(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	ctx := context.Background()

	ids := []string{"org-1/ws-2", "Org.1/ws-2.x-y/team_3", "a.b-c", "victim", "org-1/victim"}
	for _, id := range ids {
		res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": id, "tier": "schema"})
		require.Equal(t, http.StatusCreated, res.status, "%s: %s", id, res.body)
		require.Equal(t, "/v1/tenants/"+url.PathEscape(id), res.header.Get("Location"))
	}
	for _, id := range ids {
		escaped := url.PathEscape(id)
		res := e.do(http.MethodGet, "/v1/tenants/"+escaped, nil)
		require.Equal(t, http.StatusOK, res.status, "%s: %s", escaped, res.body)
		var tn registry.Tenant
		res.decode(t, &tn)
		require.Equal(t, id, tn.ID)
	}
	// Lower-case escapes work too, and on the nested routes.
	res := e.do(http.MethodPost, "/v1/tenants/org-1%2fws-2/suspend", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	var tr httpapi.TenantResponse
	res.decode(t, &tr)
	require.Equal(t, "org-1/ws-2", tr.Tenant.ID)
	require.Equal(t, registry.StatusSuspended, tr.Tenant.Status)
	res = e.do(http.MethodPost, "/v1/tenants/org-1%2Fws-2/keys", nil)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var k registry.IssuedKey
	res.decode(t, &k)
	require.Equal(t, "org-1/ws-2", k.TenantID)
	res = e.do(http.MethodGet, "/v1/tenants/org-1%2Fws-2/keys", nil)
	require.Equal(t, http.StatusOK, res.status)
	var keys httpapi.KeyListResponse
	res.decode(t, &keys)
	require.Len(t, keys.Keys, 2)
	res = e.do(http.MethodDelete, "/v1/tenants/org-1%2Fws-2/keys/"+k.KeyID, nil)
	require.Equal(t, http.StatusNoContent, res.status, string(res.body))

	// Traversal attempts: 400, never another tenant.
	for _, p := range []string{
		"/v1/tenants/..%2Fvictim",
		"/v1/tenants/%2E%2E%2Fvictim",
		"/v1/tenants/%2e%2e%2fvictim",
		"/v1/tenants/org-1%2F..%2Fvictim",
		"/v1/tenants/org-1%2F..",
		"/v1/tenants/org-1%2F.%2Fvictim",
		"/v1/tenants/victim%2F",
		"/v1/tenants/%2Fvictim",
		"/v1/tenants/org-1%2F%2Fvictim",
		"/v1/tenants/org-1%252Fvictim", // double escaping is unescaped once only
		"/v1/tenants/victim%00",
	} {
		for _, r := range []struct{ method, suffix string }{
			{http.MethodGet, ""}, {http.MethodDelete, ""}, {http.MethodPost, "/suspend"}, {http.MethodPost, "/keys"},
			{http.MethodGet, "/keys"},
		} {
			res := e.do(r.method, p+r.suffix, nil)
			require.Equal(t, http.StatusBadRequest, res.status, "%s %s: %s", r.method, p+r.suffix, res.body)
			require.Equal(t, "tenant_id", res.problem(t).Field)
		}
	}
	// An unescaped "/" is a different path, not a tenant id with a slash: no route.
	res = e.do(http.MethodDelete, "/v1/tenants/org-1/victim", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	for _, id := range ids {
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err, id)
		want := registry.StatusActive
		if id == "org-1/ws-2" {
			want = registry.StatusSuspended
		}
		require.Equal(t, want, tn.Status, id)
		keys, err := e.prov.ListKeys(ctx, id)
		require.NoError(t, err)
		require.NotEmpty(t, keys)
	}

	// Deleting by escaped id deletes exactly that tenant.
	res = e.do(http.MethodDelete, "/v1/tenants/org-1%2Fvictim", nil)
	require.Equal(t, http.StatusNoContent, res.status, string(res.body))
	_, err := e.prov.GetTenant(ctx, "org-1/victim")
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = e.prov.GetTenant(ctx, "victim")
	require.NoError(t, err)
}

func TestAdminListPages(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("org/t-%02d", i)
		want = append(want, id)
		_, err := e.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: id, Tier: registry.TierShared})
		require.NoError(t, err)
	}
	var got []string
	after, pages := "", 0
	for {
		res := e.do(http.MethodGet, "/v1/tenants?limit=3&after="+url.QueryEscape(after), nil)
		require.Equal(t, http.StatusOK, res.status, string(res.body))
		var page httpapi.TenantListResponse
		res.decode(t, &page)
		pages++
		got = append(got, tenantIDs(page.Tenants)...)
		if page.NextAfter == "" {
			break
		}
		require.Len(t, page.Tenants, 3)
		after = page.NextAfter
	}
	require.Equal(t, want, got)
	require.Equal(t, 3, pages)

	// A page of exactly the remaining tenants has no next_after; an empty page is [].
	res := e.do(http.MethodGet, "/v1/tenants?limit=7", nil)
	var page httpapi.TenantListResponse
	res.decode(t, &page)
	require.Len(t, page.Tenants, 7)
	require.Empty(t, page.NextAfter)
	res = e.do(http.MethodGet, "/v1/tenants?after="+url.QueryEscape("org/t-06"), nil)
	require.Equal(t, http.StatusOK, res.status)
	require.JSONEq(t, `{"tenants": []}`, string(res.body))
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()

	t.Run("initialised", func(t *testing.T) {
		t.Parallel()
		e := newAdminEnv(t, true)
		res := e.doWith(http.MethodGet, "/healthz", nil, nil)
		require.Equal(t, http.StatusOK, res.status)
		require.JSONEq(t, `{"status": "ok"}`, string(res.body))
		res = e.doWith(http.MethodGet, "/readyz", nil, nil)
		require.Equal(t, http.StatusOK, res.status, string(res.body))
		require.JSONEq(t, `{"status": "ready"}`, string(res.body))
	})

	t.Run("not initialised", func(t *testing.T) {
		t.Parallel()
		e := newAdminEnv(t, false)
		res := e.doWith(http.MethodGet, "/healthz", nil, nil)
		require.Equal(t, http.StatusOK, res.status)
		res = e.doWith(http.MethodGet, "/readyz", nil, nil)
		require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
		p := res.problem(t)
		require.Equal(t, httpapi.CodeUnavailable, p.Code)
		require.Contains(t, p.Message, "provisioner init")
		require.NotEmpty(t, res.header.Get("Retry-After"))
		// The API says the same.
		res = e.do(http.MethodPost, "/v1/tenants", `{"tenant_id": "acme", "tier": "shared"}`)
		require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
		require.Equal(t, httpapi.CodeUnavailable, res.problem(t).Code)

		// Once initialised, it is ready.
		_, err := e.prov.Init(context.Background(), provision.InitParams{})
		require.NoError(t, err)
		res = e.doWith(http.MethodGet, "/readyz", nil, nil)
		require.Equal(t, http.StatusOK, res.status, string(res.body))
	})

	t.Run("database down", func(t *testing.T) {
		t.Parallel()
		pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		prov, err := provision.New(provision.Config{Pool: pool})
		require.NoError(t, err)
		h, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: testToken})
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		e := &adminEnv{t: t, srv: srv}
		res := e.doWith(http.MethodGet, "/readyz", nil, nil)
		require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
		p := res.problem(t)
		require.Equal(t, httpapi.CodeUnavailable, p.Code)
		require.NotContains(t, p.Message, "127.0.0.1", "no connection details for clients")
		res = e.do(http.MethodGet, "/v1/tenants/acme", nil)
		require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
		require.Equal(t, "database unavailable", res.problem(t).Message)
	})
}

func TestMetricsHaveBoundedLabels(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	const id = "metricsprobe/tenant-xyz"
	res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": id, "tier": "shared"})
	require.Equal(t, http.StatusCreated, res.status)
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/tenants/"+url.PathEscape(id), nil).status)
	require.Equal(t, http.StatusNotFound, e.do(http.MethodGet, "/v1/tenants/ghost-tenant-abc", nil).status)
	require.Equal(t, http.StatusNotFound, e.do(http.MethodGet, "/v1/unknown-path-qqq", nil).status)

	body := scrape(t, e.reg)
	for _, want := range []string{
		`tenantmem_http_requests_total{code="201",method="POST",route="/v1/tenants",server="admin"} 1`,
		`tenantmem_http_requests_total{code="200",method="GET",route="/v1/tenants/:id",server="admin"} 1`,
		`tenantmem_http_requests_total{code="404",method="GET",route="/v1/tenants/:id",server="admin"} 1`,
		`tenantmem_http_request_duration_seconds_bucket{method="POST",route="/v1/tenants",server="admin",status_class="2xx",le="+Inf"} 1`,
	} {
		require.Contains(t, body, want)
	}
	for _, leak := range []string{"metricsprobe", "ghost-tenant", "unknown-path-qqq", "tenant-xyz"} {
		require.NotContains(t, body, leak)
	}
}

func TestNewAdminValidatesItsConfig(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	prov, err := provision.New(provision.Config{Pool: pool})
	require.NoError(t, err)
	for _, tc := range []struct {
		given  httpapi.AdminConfig
		expect string
	}{
		{httpapi.AdminConfig{Pool: pool, AdminToken: testToken}, "Provisioner is required"},
		{httpapi.AdminConfig{Provisioner: prov, AdminToken: testToken}, "Pool is required"},
		{httpapi.AdminConfig{Provisioner: prov, Pool: pool}, "AdminToken is required"},
		{httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: "short"}, "at least 16"},
		{httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: testToken + "\n"}, "white space"},
		{httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: testToken, BodyLimit: -1}, "BodyLimit"},
	} {
		_, err := httpapi.NewAdmin(tc.given)
		require.ErrorContains(t, err, tc.expect)
	}
	// Two servers can share one registry.
	reg := prometheus.NewRegistry()
	for range 2 {
		_, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: testToken, Registerer: reg})
		require.NoError(t, err)
	}
}

func tenantIDs(ts []registry.Tenant) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

func keyIDs(ks []registry.APIKey) []string {
	out := []string{}
	for _, k := range ks {
		out = append(out, k.KeyID)
	}
	return out
}
