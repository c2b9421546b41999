package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/console"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestAuthRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme")
	b := e.browser()

	for _, path := range []string{"/console/", "/console/tenants", "/console/tenant?id=acme", "/console/placements",
		"/console/operations", "/console/confirm?action=suspend&id=acme"} {
		r := b.get(path)
		require.Equal(t, http.StatusSeeOther, r.status, path)
		require.Equal(t, "/console/login", r.header.Get("Location"), path)
		require.NotContains(t, r.body, "acme", path)
	}
	// A state change without a session is refused and changes nothing.
	r := b.post("/console/tenant/suspend", url.Values{"id": {"acme"}, "csrf": {"x"}}, nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Equal(t, registry.StatusActive, e.status("acme"))

	// A wrong token gives no cookie; a made-up cookie is no session.
	r = b.post("/console/login", url.Values{"token": {testToken + "x"}}, nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Empty(t, r.header.Values("Set-Cookie"))
	require.Contains(t, r.body, "invalid admin token")
	u, _ := url.Parse(e.srv.URL + "/console/")
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: console.CookieName, Value: "made-up", Path: "/console/"}})
	r = b.get("/console/tenants")
	require.Equal(t, http.StatusSeeOther, r.status)

	// The right token: a session cookie that is not the token, HttpOnly, SameSite=Strict; then
	// logout ends the session on the server, so the old cookie no longer works.
	r = b.post("/console/login", url.Values{"token": {testToken}}, nil)
	require.Equal(t, http.StatusSeeOther, r.status)
	ck := r.header.Get("Set-Cookie")
	require.Contains(t, ck, console.CookieName+"=")
	require.Contains(t, ck, "HttpOnly")
	require.Contains(t, ck, "SameSite=Strict")
	require.Contains(t, ck, "Path=/console/")
	require.NotContains(t, ck, "Secure", "plain HTTP without SecureCookie")
	require.NotContains(t, ck, testToken)
	cookies := b.c.Jar.Cookies(u)
	r = b.get("/console/tenants")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "acme")
	r = b.post("/console/logout", url.Values{"csrf": {b.csrf}}, nil)
	require.Equal(t, http.StatusSeeOther, r.status)
	b.c.Jar.SetCookies(u, cookies) // the stolen cookie of a logged-out session
	r = b.get("/console/tenants")
	require.Equal(t, http.StatusSeeOther, r.status)
}

func TestSecureCookie(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *console.Config) { c.SecureCookie = true })
	b := e.browser()
	r := b.post("/console/login", url.Values{"token": {testToken}}, nil)
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Contains(t, r.header.Get("Set-Cookie"), "; Secure")
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme")
	b := e.browser()
	b.login()
	other := e.browser()
	other.login()
	require.NotEqual(t, b.csrf, other.csrf, "each session has its own token")

	for name, token := range map[string]string{"missing": "", "wrong": b.csrf + "x", "another session's": other.csrf} {
		form := url.Values{"id": {"acme"}}
		if token != "" {
			form.Set("csrf", token)
		}
		r := b.post("/console/tenant/suspend", form, nil)
		require.Equal(t, http.StatusForbidden, r.status, name)
		require.Contains(t, r.body, "CSRF", name)
		require.Equal(t, registry.StatusActive, e.status("acme"), name)
	}
	r := b.post("/console/tenant/suspend", url.Values{"id": {"acme"}, "csrf": {b.csrf}}, nil)
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	require.Equal(t, registry.StatusSuspended, e.status("acme"))

	// GET never changes state, whatever it carries.
	r = b.get("/console/tenant/resume?id=acme&csrf=" + url.QueryEscape(b.csrf))
	require.Equal(t, http.StatusNotFound, r.status)
	r = b.get("/console/confirm?action=resume&id=acme")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, registry.StatusSuspended, e.status("acme"))
}

func TestCrossOriginRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme")
	b := e.browser()
	b.login()
	form := func() url.Values { return url.Values{"id": {"acme"}, "csrf": {b.csrf}} }
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"other origin", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": ""}},
		{"other origin, same-origin claimed", map[string]string{"Origin": "http://evil.example"}},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site fetch", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"neither Origin nor Referer", map[string]string{"Origin": "", "Sec-Fetch-Site": ""}},
		{"null origin", map[string]string{"Origin": "null", "Sec-Fetch-Site": ""}},
		{"other Referer", map[string]string{"Origin": "", "Sec-Fetch-Site": "", "Referer": "http://evil.example/console/"}},
		{"host as a prefix", map[string]string{"Origin": e.srv.URL + ".evil.example", "Sec-Fetch-Site": ""}},
	} {
		r := b.post("/console/tenant/suspend", form(), tc.header)
		require.Equal(t, http.StatusForbidden, r.status, tc.name)
		require.Equal(t, registry.StatusActive, e.status("acme"), tc.name)
	}
	// Login is guarded too (login CSRF): no session for a cross-origin form.
	r := e.browser().post("/console/login", url.Values{"token": {testToken}}, map[string]string{"Origin": "http://evil.example"})
	require.Equal(t, http.StatusForbidden, r.status)
	require.Empty(t, r.header.Values("Set-Cookie"))

	// A same-origin Referer without Origin (older browsers) is accepted.
	r = b.post("/console/tenant/suspend", form(), map[string]string{"Origin": "", "Sec-Fetch-Site": "", "Referer": e.srv.URL + "/console/confirm"})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	require.Equal(t, registry.StatusSuspended, e.status("acme"))
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.browser()
	for _, path := range []string{"/console/login", "/console/tenants", "/console/nothing"} {
		r := b.get(path)
		csp := r.header.Get("Content-Security-Policy")
		require.Contains(t, csp, "default-src 'none'", path)
		require.Contains(t, csp, "frame-ancestors 'none'", path)
		require.NotContains(t, csp, "unsafe-inline", path)
		require.Equal(t, "DENY", r.header.Get("X-Frame-Options"), path)
		require.Equal(t, "no-store", r.header.Get("Cache-Control"), path)
		require.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"), path)
	}
	b.login()
	r := b.get("/console/tenants")
	require.NotContains(t, r.body, "<script", "the console uses no script at all")
	require.NotContains(t, r.body, " style=", "no inline style (CSP style-src 'self')")
	r = b.get("/console/static/console.css")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.header.Get("Content-Type"), "text/css")
}

// TestEscaping puts markup in every free-text field the console shows and in its inputs, and
// checks it arrives as text.
func TestEscaping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme")
	ctx := context.Background()
	const (
		script = `<script>alert(1)</script>`
		img    = `"><img src=x onerror=alert(2)>`
	)
	_, err := e.pool.Exec(ctx, `UPDATE tenantmem_control.placements SET description = $1 WHERE placement_id = 'local'`, script+img)
	require.NoError(t, err)
	require.NoError(t, registry.Audit(ctx, e.pool, "acme", "note"+script, img, map[string]any{"why": "</code>" + script, img: 1}))
	_, err = registry.StartOperation(ctx, e.pool, registry.OperationStartParams{Kind: "backup", Subject: script + img, Total: 1})
	require.NoError(t, err)

	b := e.browser()
	b.login()
	bad := regexp.MustCompile(`<script|<img|onerror=alert\(2\)>`)
	for _, path := range []string{"/console/tenant?id=acme", "/console/placements", "/console/operations",
		"/console/tenants?q=" + url.QueryEscape(script), "/console/tenant?id=" + url.QueryEscape(script),
		"/console/tenants?after=" + url.QueryEscape(img), "/console/confirm?action=" + url.QueryEscape(script) + "&id=acme",
		"/console/confirm?action=revoke-key&id=acme&key_id=" + url.QueryEscape(img)} {
		r := b.get(path)
		require.NotRegexp(t, bad, r.body, path)
		require.True(t, strings.Contains(r.body, "&lt;script&gt;") || strings.Contains(r.body, "&lt;img") ||
			strings.Contains(r.body, "\\u003cscript") || r.status == http.StatusBadRequest, path)
	}
	r := b.get("/console/tenants?q=" + url.QueryEscape(script))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "q: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34; is not the start of a tenant id")
	r = b.get("/console/tenant?id=" + url.QueryEscape(script))
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "id: &#34;&lt;script&gt;")
}

func TestSearchAndPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *console.Config) { c.PageSize = 3 })
	e.createTenants("acme/a", "acme/b", "schema:acme/c", "acme/d", "acmex", "Acme", "other")
	b := e.browser()
	b.login()

	ids := func(body string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`class="tenant-link">([^<]+)<`).FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return out
	}
	r := b.get("/console/tenants")
	require.Equal(t, []string{"Acme", "acme/a", "acme/b"}, ids(r.body), "byte order: upper case first")
	r = b.get("/console/tenants?q=acme/")
	require.Equal(t, []string{"acme/a", "acme/b", "acme/c"}, ids(r.body))
	next := regexp.MustCompile(`href="(/console/tenants\?q=[^"]+)" id="next"`).FindStringSubmatch(r.body)
	require.NotNil(t, next, r.body)
	r = b.get(strings.ReplaceAll(next[1], "&amp;", "&"))
	require.Equal(t, []string{"acme/d"}, ids(r.body))
	require.NotContains(t, r.body, `id="next"`)
	r = b.get("/console/tenants?q=acme")
	require.Equal(t, []string{"acme/a", "acme/b", "acme/c"}, ids(r.body))
	r = b.get("/console/tenants?q=acme&after=acme/d")
	require.Equal(t, []string{"acmex"}, ids(r.body))
	r = b.get("/console/tenants?q=zzz")
	require.Empty(t, ids(r.body))
	require.Contains(t, r.body, "No tenant starts with")
}

// TestSize shows the stored usage totals of shared and schema tier tenants, read in one batch.
func TestSize(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme/a", "schema:acme/b", "acme/none")
	ctx := context.Background()
	// The memory engine keeps these rows; the superuser test pool writes them directly.
	_, err := e.pool.Exec(ctx, `INSERT INTO tenantmem_shared.tenant_usage (owner_id, documents, chunks, content_bytes)
		VALUES ('acme/a', 3, 9, 2048)`)
	require.NoError(t, err)
	tb, err := e.prov.GetTenant(ctx, "acme/b")
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `INSERT INTO `+tb.SchemaName+`.tenant_usage (owner_id, documents, chunks, content_bytes)
		VALUES ('acme/b', 7, 20, 5242880)`)
	require.NoError(t, err)

	ts, err := registry.SearchTenants(ctx, e.pool, registry.TenantSearchParams{Prefix: "acme/", Limit: 10})
	require.NoError(t, err)
	usage, errs := e.prov.UsageOf(ctx, ts)
	require.Empty(t, errs)
	require.Equal(t, int64(3), usage["acme/a"].Documents)
	require.Equal(t, int64(5242880), usage["acme/b"].ContentBytes)
	require.Equal(t, provision.Usage{}, usage["acme/none"], "no writes yet: zero totals")

	b := e.browser()
	b.login()
	r := b.get("/console/tenants?q=acme/")
	require.Contains(t, r.body, "2.0 KiB")
	require.Contains(t, r.body, "5.0 MiB")
	r = b.get("/console/tenant?id=acme/b")
	require.Contains(t, r.body, "7 documents, 20 chunks, 5.0 MiB")
}

func TestActions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("acme/u-1")
	b := e.browser()
	b.login()
	id := url.Values{"id": {"acme/u-1"}}

	r := b.get("/console/confirm?action=suspend&id=acme/u-1")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, `action="/console/tenant/suspend"`)
	require.Equal(t, registry.StatusActive, e.status("acme/u-1"), "the confirmation page changes nothing")
	r = b.post("/console/tenant/suspend", withCSRF(id, b.csrf), nil)
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, "/console/tenant?id=acme%2Fu-1&done=suspended", r.header.Get("Location"))
	require.Equal(t, registry.StatusSuspended, e.status("acme/u-1"))
	r = b.post("/console/tenant/resume", withCSRF(id, b.csrf), nil)
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, registry.StatusActive, e.status("acme/u-1"))

	// Issue: the secret is in that one response, never on the page again.
	r = b.post("/console/tenant/issue-key", withCSRF(id, b.csrf), nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "no-store", r.header.Get("Cache-Control"))
	m := regexp.MustCompile(`<pre id="secret">(tm_([a-z0-9]{16})_[0-9a-f]{64})</pre>`).FindStringSubmatch(r.body)
	require.NotNil(t, m, r.body)
	secret, keyID := m[1], m[2]
	tn, _, err := registry.Authenticate(context.Background(), e.pool, secret)
	require.NoError(t, err)
	require.Equal(t, "acme/u-1", tn.ID)
	r = b.get("/console/tenant?id=acme/u-1")
	require.Contains(t, r.body, keyID)
	require.NotContains(t, r.body, secret[len("tm_")+17:], "the secret is never shown again")

	// Revoke, through its confirmation.
	r = b.get("/console/confirm?action=revoke-key&id=acme/u-1&key_id=" + keyID)
	require.Contains(t, r.body, `name="key_id" value="`+keyID+`"`)
	r = b.post("/console/tenant/revoke-key", withCSRF(url.Values{"id": {"acme/u-1"}, "key_id": {keyID}}, b.csrf), nil)
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	_, _, err = registry.Authenticate(context.Background(), e.pool, secret)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)

	// Bad input names the field; an unknown tenant or key is a 404; nothing changes.
	r = b.post("/console/tenant/revoke-key", withCSRF(url.Values{"id": {"acme/u-1"}, "key_id": {"short"}}, b.csrf), nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body, "key_id: must be 16 characters")
	r = b.post("/console/tenant/revoke-key", withCSRF(url.Values{"id": {"other"}, "key_id": {keyID}}, b.csrf), nil)
	require.Equal(t, http.StatusNotFound, r.status)
	r = b.post("/console/tenant/suspend", withCSRF(url.Values{"id": {"nobody"}}, b.csrf), nil)
	require.Equal(t, http.StatusNotFound, r.status)
	require.Contains(t, r.body, "nobody")

	// The audit log shows what the console did.
	r = b.get("/console/tenant?id=acme/u-1")
	for _, ev := range []string{"suspended", "resumed", "key_issued", "key_revoked"} {
		require.Contains(t, r.body, "<td>"+ev+"</td>", ev)
	}
}

func withCSRF(v url.Values, token string) url.Values {
	v.Set("csrf", token)
	return v
}

// TestOperations shows a migration recorded by Migrate, and a running operation whose process
// stopped reporting as stalled.
func TestOperations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenants("schema:acme/a", "schema:acme/b")
	ctx := context.Background()
	rep, err := e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	ops, err := registry.ListOperations(ctx, e.pool, registry.OperationListParams{})
	require.NoError(t, err)
	require.Len(t, ops, 1)
	require.Equal(t, registry.OperationMigrate, ops[0].Kind)
	require.Equal(t, registry.OperationSucceeded, ops[0].State)
	require.Equal(t, int64(rep.Checked), ops[0].Done)
	require.Equal(t, int64(rep.Checked), ops[0].Total)

	id, err := registry.StartOperation(ctx, e.pool, registry.OperationStartParams{Kind: "move", Subject: "acme/a", Total: 400, Unit: "rows"})
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.operations SET done = 100, started_at = now() - interval '2 hours',
		updated_at = now() - interval '1 hour' WHERE operation_id = $1`, id)
	require.NoError(t, err)
	live, err := registry.StartOperation(ctx, e.pool, registry.OperationStartParams{Kind: "backup", Subject: "acme/b", Total: 10, Unit: "MiB"})
	require.NoError(t, err)
	require.NoError(t, registry.UpdateOperation(ctx, e.pool, live, 5, 10, 0))
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.operations SET started_at = updated_at - interval '10 seconds' WHERE operation_id = $1`, live)
	require.NoError(t, err)

	b := e.browser()
	b.login()
	r := b.get("/console/operations")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, `<meta http-equiv="refresh" content="5">`)
	require.Regexp(t, `>stalled</span></td>\s*<td><progress max="400" value="100"></progress> 100/400 rows</td>\s*<td>0\.0278 rows/s</td>\s*<td>–</td>`, r.body)
	require.Contains(t, r.body, `<progress max="400" value="100">`)
	require.Contains(t, r.body, `<progress max="10" value="5">`)
	require.Regexp(t, `0\.5 MiB/s</td>\s*<td>10s</td>`, r.body, "rate and ETA of the live one")
	require.Contains(t, r.body, ">succeeded<")
	require.Contains(t, r.body, "(migrations, backups, moves)")
}

// TestSessionExpiry ends a session at its TTL.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	now := time.Now()
	e := newEnv(t, func(c *console.Config) {
		c.SessionTTL = time.Hour
		c.Now = func() time.Time { return now }
	})
	b := e.browser()
	b.login()
	now = now.Add(59 * time.Minute)
	require.Equal(t, http.StatusOK, b.get("/console/tenants").status)
	now = now.Add(2 * time.Minute)
	require.Equal(t, http.StatusSeeOther, b.get("/console/tenants").status)
}
