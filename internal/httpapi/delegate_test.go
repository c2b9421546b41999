package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// delegateEnv is a router with tenant acme, its keys (plain, delegate, delegate+create) and
// descendants, and victims around it, each holding one document with a unique canary.
type delegateEnv struct {
	*routerEnv
	plain, delegate, creator string
	// own are the descendants' and victims' own keys.
	own map[string]string
}

// canary is the secret word of one tenant's document.
func canary(id string) string {
	return "canary" + strings.NewReplacer("/", "x", "-", "y", ".", "z").Replace(strings.ToLower(id)) + "q" +
		map[bool]string{true: "upper", false: "lower"}[id != strings.ToLower(id)]
}

func newDelegateEnv(t *testing.T) *delegateEnv {
	t.Helper()
	ctx := context.Background()
	e := &delegateEnv{routerEnv: newRouterEnv(t), own: map[string]string{}}
	e.plain = e.tenant("acme", registry.TierShared)
	for _, k := range []struct {
		dst    *string
		params registry.KeyIssueParams
	}{
		{&e.delegate, registry.KeyIssueParams{TenantID: "acme", Delegate: true}},
		{&e.creator, registry.KeyIssueParams{TenantID: "acme", Delegate: true, CreateDescendants: true}},
	} {
		issued, err := e.prov.IssueKeyWith(ctx, k.params)
		require.NoError(t, err)
		*k.dst = issued.Key
	}
	// Descendants in two tiers, and victims: a prefix sibling, other customers, case variants.
	for _, c := range []struct {
		id   string
		tier registry.Tier
	}{
		{"acme/u-1", registry.TierShared}, {"acme/team/u-2", registry.TierSchema},
		{"acmex", registry.TierShared}, {"acmex/u-1", registry.TierShared}, {"other/u-1", registry.TierShared},
		{"ACME", registry.TierShared}, {"ACME/u-1", registry.TierShared}, {"acme.x/u-1", registry.TierSchema},
		{"org/acme", registry.TierShared}, {"org/acmey", registry.TierShared},
	} {
		e.own[c.id] = e.tenant(c.id, c.tier)
		e.ok(t, e.own[c.id], http.MethodPost, "/v1/documents", map[string]any{
			"document_name": "secret", "document_type": "text", "content": "the word is " + canary(c.id),
		}, http.StatusCreated, nil)
	}
	// Cheap descendants: no keys, shared tier.
	res, err := e.prov.CreateDescendants(ctx, provision.DescendantsCreateParams{Parent: "acme", IDs: []string{"acme/u-3", "acme/u-4"}})
	require.NoError(t, err)
	require.Equal(t, []string{"acme/u-3", "acme/u-4"}, res.Created)
	return e
}

// as sends a request with key acting for target (no header when target is "-").
func (e *delegateEnv) as(t *testing.T, key, target, method, path string, body any) response {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + key}
	if target != "-" {
		h[httpapi.HeaderActAs] = target
	}
	return e.doWith(t, method, path, body, h)
}

// requireNoCanary fails when a response shows any victim's canary.
func (e *delegateEnv) requireNoCanary(t *testing.T, res response, except ...string) {
	t.Helper()
	for id := range e.own {
		if containsStr(except, id) {
			continue
		}
		require.NotContains(t, string(res.body), canary(id), "response leaks %s", id)
	}
}

// doWithValues is doWith with headers of several values.
func (e *delegateEnv) doWithValues(t *testing.T, method, path string, header map[string]string, multi map[string][]string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for k, vs := range multi {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// TestDelegatedKeyActsForDescendantsOnly: a delegate key of acme writes, reads, lists, searches
// and counts in acme/u-1 (shared) and acme/team/u-2 (schema) exactly as their own keys would, and
// nothing of it reaches acme itself or a sibling; the handle cache, keyed on the effective tenant,
// never serves one tenant's handle to another across interleaved requests.
func TestDelegatedKeyActsForDescendantsOnly(t *testing.T) {
	t.Parallel()
	e := newDelegateEnv(t)
	for round := range 2 { // the second round is served from warm caches
		for _, id := range []string{"acme/u-1", "acme/team/u-2"} {
			word := "delegated" + strings.NewReplacer("/", "", "-", "").Replace(id) + "r" + string(rune('a'+round))
			var added memory.DocumentAddResult
			res := e.as(t, e.delegate, id, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "by parent", "document_type": "text", "content": "written for the user: " + word,
			})
			require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
			res.decode(t, &added)

			// The descendant's own key sees it; acme's own key (no header) and a sibling do not.
			own := e.own[id]
			e.ok(t, own, http.MethodGet, "/v1/documents/"+added.DocumentID, nil, http.StatusOK, nil)
			require.Equal(t, http.StatusNotFound, e.as(t, e.delegate, "-", http.MethodGet, "/v1/documents/"+added.DocumentID, nil).status)
			require.Equal(t, http.StatusNotFound, e.as(t, e.delegate, "acme/u-3", http.MethodGet, "/v1/documents/"+added.DocumentID, nil).status)
			require.Equal(t, http.StatusNotFound, e.as(t, e.plain, "-", http.MethodGet, "/v1/documents/"+added.DocumentID, nil).status)

			// Delegated read, list, search and statistics are the descendant's.
			res = e.as(t, e.delegate, id, http.MethodGet, "/v1/documents/"+added.DocumentID, nil)
			require.Equal(t, http.StatusOK, res.status)
			var sr struct {
				Results []struct {
					DocumentID string `json:"document_id"`
				} `json:"results"`
			}
			res = e.as(t, e.delegate, id, http.MethodPost, "/v1/search", map[string]any{"query_text": word, "search_type": "text"})
			require.Equal(t, http.StatusOK, res.status, "%s", res.body)
			res.decode(t, &sr)
			require.Len(t, sr.Results, 1)
			require.Equal(t, added.DocumentID, sr.Results[0].DocumentID)
			e.requireNoCanary(t, res, id)
			for _, other := range []string{"-", "acme/u-3", "acme/u-4"} {
				res = e.as(t, e.delegate, other, http.MethodPost, "/v1/search", map[string]any{"query_text": word, "search_type": "text"})
				require.Equal(t, http.StatusOK, res.status)
				res.decode(t, &sr)
				require.Empty(t, sr.Results, "search as %s finds %s's document", other, id)
			}
			var st memory.Statistics
			e.as(t, e.delegate, id, http.MethodGet, "/v1/statistics", nil).decode(t, &st)
			require.Equal(t, 2+round, st.DocumentCount, "the canary document and this test's")
			var ownSt memory.Statistics
			e.ok(t, own, http.MethodGet, "/v1/statistics", nil, http.StatusOK, &ownSt)
			require.Equal(t, st.DocumentCount, ownSt.DocumentCount)
		}
	}
	// The access log names the effective tenant and the key's tenant.
	var logged bool
	for _, r := range e.logs.records("http request") {
		if r["tenant_id"] == "acme/team/u-2" && r["delegated_by"] == "acme" {
			logged = true
		}
	}
	require.True(t, logged, "an access log line with tenant_id and delegated_by")
	// Siblings created in bulk count nothing; acme itself holds only its own (none).
	for _, target := range []string{"acme/u-3", "acme/u-4", "-"} {
		var st memory.Statistics
		res := e.as(t, e.delegate, target, http.MethodGet, "/v1/statistics", nil)
		require.Equal(t, http.StatusOK, res.status)
		res.decode(t, &st)
		require.Zero(t, st.DocumentCount, target)
		require.Zero(t, st.ChunkCount, target)
	}
}

// TestDelegatedKeyCannotReachOutsideItsSubtree: every spelling of a tenant outside acme's subtree
// (a prefix sibling, other customers, case variants, another parent's acme, acme itself) and
// every malformed spelling of a tenant inside it (trailing or doubled '/', '.', '..', encoded
// '/', whitespace, control characters, Unicode look-alikes, overlong) is refused, on every route,
// for every key of acme; valid ids all get the one 404 body of a tenant that does not exist.
// Afterwards every victim still holds exactly its own document.
func TestDelegatedKeyCannotReachOutsideItsSubtree(t *testing.T) {
	t.Parallel()
	e := newDelegateEnv(t)
	notFound := e.as(t, e.delegate, "acme/does-not-exist", http.MethodGet, "/v1/statistics", nil)
	require.Equal(t, http.StatusNotFound, notFound.status)
	require.Equal(t, httpapi.CodeNotFound, notFound.problem(t).Code)

	outside := []string{
		"acmex", "acmex/u-1", "other/u-1", "ACME", "ACME/u-1", "Acme/u-1", "aCme/u-1", "acme.x/u-1",
		"acme", "org/acme", "org/acmey", "org/acme/u-1", "acme-/u-1", "acm", "acme.", "acme_/u-1",
	}
	malformed := []string{
		"", "acme/", "acme/u-1/", "/acme/u-1", "acme//u-1", "acme/./u-1", "acme/..", "acme/../acmex/u-1",
		"acme/../other/u-1", "acme/u-1/..", "acme/%2E%2E/other/u-1", "acme%2Fu-1", "acme%2fu-1", "acme/u-1%00",
		"acme/ u-1", "acme /u-1", "acme/\tu-1", "acme\\u-1", "acme/u-1;other/u-1", "acme/u-1,other/u-1",
		"аcme/u-1",       // Cyrillic а
		"acme／u-1",       // fullwidth solidus
		"acme∕u-1",       // division slash
		"ａcme/u-1",       // fullwidth a
		"acme/u-1\u200b", // zero-width space
		"acme/u\u00ad-1", // soft hyphen
		"acme/" + strings.Repeat("u", 260),
	}
	routes := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/v1/statistics", nil},
		{http.MethodPost, "/v1/documents", map[string]any{"document_name": "x", "document_type": "text", "content": "intruder"}},
		{http.MethodPost, "/v1/search", map[string]any{"query_text": "canary word", "search_type": "text"}},
		{http.MethodGet, "/v1/documents", nil},
	}
	for _, key := range []string{e.delegate, e.creator} {
		for _, target := range outside {
			for _, r := range routes {
				res := e.as(t, key, target, r.method, r.path, r.body)
				require.Equal(t, http.StatusNotFound, res.status, "%q %s %s: %s", target, r.method, r.path, res.body)
				require.Equal(t, string(notFound.body), string(res.body), "%q: the body must not tell it exists", target)
				e.requireNoCanary(t, res)
			}
		}
		for _, target := range malformed {
			for _, r := range routes {
				res := e.as(t, key, target, r.method, r.path, r.body)
				require.Equal(t, http.StatusBadRequest, res.status, "%q %s %s: %s", target, r.method, r.path, res.body)
				p := res.problem(t)
				require.Equal(t, httpapi.CodeInvalidInput, p.Code)
				require.Contains(t, p.Message, httpapi.HeaderActAs)
				e.requireNoCanary(t, res)
			}
		}
	}
	// Control characters never get through HTTP; the resolver refuses them as written too.
	for _, target := range []string{"acme/u-1\n", "acme/u-1\r\n", "acme/u-1\x00", "acme/\x7fu-1", " acme/u-1", "acme/u-1 "} {
		_, err := e.resolver.ResolveAs(context.Background(), e.delegate, target)
		require.ErrorIs(t, err, routing.ErrInvalidTarget, "%q", target)
	}
	// The header twice is refused rather than guessed.
	req := map[string]string{"Authorization": "Bearer " + e.delegate}
	res := e.doWithValues(t, http.MethodGet, "/v1/statistics", req, map[string][]string{httpapi.HeaderActAs: {"acme/u-1", "other/u-1"}})
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Contains(t, res.problem(t).Message, "more than once")

	// The creating key created nothing outside the subtree, and every victim holds only its own.
	for id, key := range e.own {
		st := e.stats(t, key)
		require.Equal(t, 1, st.DocumentCount, id)
	}
	var n int
	require.NoError(t, e.admin.QueryRow(context.Background(), `SELECT count(*) FROM tenantmem_control.tenants
		WHERE tenant_id NOT IN ('acme', 'acme/u-3', 'acme/u-4', 'acme/does-not-exist') AND NOT tenant_id = ANY($1)`, keysOf(e.own)).Scan(&n))
	require.Zero(t, n, "no tenant was created by a refused request")
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestDelegationStatusTable: a key without the delegate scope gets 403 with one body whatever
// it names; a suspended or deleted descendant answers exactly like one that never existed; a
// suspended parent answers 403 and a revoked key 401 for every delegated request from then on.
func TestDelegationStatusTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newDelegateEnv(t)
	notFound := e.as(t, e.delegate, "acme/never", http.MethodGet, "/v1/statistics", nil)
	require.Equal(t, http.StatusNotFound, notFound.status)

	// No delegate scope: 403, decided before the target is looked at.
	forbidden := e.as(t, e.plain, "acme/u-1", http.MethodGet, "/v1/statistics", nil)
	require.Equal(t, http.StatusForbidden, forbidden.status)
	require.Equal(t, httpapi.CodeForbidden, forbidden.problem(t).Code)
	for _, target := range []string{"acme/never", "other/u-1", "acmex/u-1"} {
		res := e.as(t, e.plain, target, http.MethodGet, "/v1/statistics", nil)
		require.Equal(t, string(forbidden.body), string(res.body), target)
	}
	// A descendant's own key cannot act for its parent or siblings either.
	require.Equal(t, http.StatusForbidden, e.as(t, e.own["acme/u-1"], "acme", http.MethodGet, "/v1/statistics", nil).status)

	// Suspended descendant: the body of one that does not exist; resumed: served again.
	_, err := e.prov.SuspendTenant(ctx, "acme/u-1")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "404 for a suspended descendant", func() bool {
		return e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusNotFound
	})
	res := e.as(t, e.delegate, "acme/u-1", http.MethodPost, "/v1/documents", map[string]any{"document_name": "x", "document_type": "text", "content": "y"})
	require.Equal(t, string(notFound.body), string(res.body))
	_, err = e.prov.ResumeTenant(ctx, "acme/u-1")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "200 after resume", func() bool {
		return e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusOK
	})

	// Deleted descendant: the same body.
	require.NoError(t, e.prov.DeleteTenant(ctx, "acme/u-4"))
	waitUntil(t, 10*time.Second, "404 for a deleted descendant", func() bool {
		return string(e.as(t, e.delegate, "acme/u-4", http.MethodGet, "/v1/statistics", nil).body) == string(notFound.body)
	})

	// Suspended parent: 403 for delegated requests too, and nothing is written meanwhile.
	_, err = e.prov.SuspendTenant(ctx, "acme")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "403 after the parent's suspension", func() bool {
		return e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusForbidden
	})
	res = e.as(t, e.delegate, "acme/u-1", http.MethodPost, "/v1/documents", map[string]any{"document_name": "x", "document_type": "text", "content": "while suspended"})
	require.Equal(t, http.StatusForbidden, res.status)
	_, err = e.prov.ResumeTenant(ctx, "acme")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "200 after the parent's resume", func() bool {
		return e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusOK
	})
	require.Equal(t, 1, e.stats(t, e.own["acme/u-1"]).DocumentCount, "nothing was written while refused")

	// Revoked parent key: 401 for every delegated request.
	keyID, _, err := registry.ParseKey(e.delegate)
	require.NoError(t, err)
	require.NoError(t, e.prov.RevokeKey(ctx, "acme", keyID))
	waitUntil(t, 10*time.Second, "401 after revocation", func() bool {
		return e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusUnauthorized
	})
	// A request that touches no data (a target outside the subtree) learns of the revocation
	// from the notification, a few milliseconds later; it never reached data either way.
	waitUntil(t, 10*time.Second, "401 for any target after revocation", func() bool {
		return e.as(t, e.delegate, "other/u-1", http.MethodGet, "/v1/statistics", nil).status == http.StatusUnauthorized
	})
}

// TestDelegatedFence: a delegated request whose handle was resolved before the parent's key was
// revoked, or before the parent or the descendant was suspended, does nothing: its first
// transaction checks all three, whatever the caches say.
func TestDelegatedFence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newDelegateEnv(t)
	scope := func(key string) memory.Scope {
		h, err := e.resolver.ResolveAs(ctx, key, "acme/u-1")
		require.NoError(t, err)
		require.Equal(t, "acme/u-1", h.TenantID)
		require.Equal(t, "acme", h.ActingFor())
		keyID, _, err := registry.ParseKey(key)
		require.NoError(t, err)
		return h.KeyScope(keyID, 5*time.Second)
	}
	add := func(s memory.Scope) error {
		_, err := e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "late", DocumentType: "text", Content: "late write"})
		return err
	}
	// Works while nothing changed.
	require.NoError(t, add(scope(e.delegate)))

	s := scope(e.delegate)
	_, err := e.prov.SuspendTenant(ctx, "acme")
	require.NoError(t, err)
	require.ErrorIs(t, add(s), memory.ErrFenced, "parent suspended")
	_, err = e.prov.ResumeTenant(ctx, "acme")
	require.NoError(t, err)

	waitUntil(t, 10*time.Second, "parent served again", func() bool {
		_, err := e.resolver.ResolveAs(ctx, e.delegate, "acme/u-1")
		return err == nil
	})
	s = scope(e.delegate)
	_, err = e.prov.SuspendTenant(ctx, "acme/u-1")
	require.NoError(t, err)
	require.ErrorIs(t, add(s), memory.ErrFenced, "descendant suspended")
	_, err = e.prov.ResumeTenant(ctx, "acme/u-1")
	require.NoError(t, err)

	waitUntil(t, 10*time.Second, "descendant served again", func() bool {
		_, err := e.resolver.ResolveAs(ctx, e.delegate, "acme/u-1")
		return err == nil
	})
	s = scope(e.delegate)
	keyID, _, err := registry.ParseKey(e.delegate)
	require.NoError(t, err)
	require.NoError(t, e.prov.RevokeKey(ctx, "acme", keyID))
	require.ErrorIs(t, add(s), routing.ErrKeyRevoked, "key revoked")

	require.Equal(t, 2, e.stats(t, e.own["acme/u-1"]).DocumentCount, "only the first write landed")
}

// TestDelegatedFenceFollowsAMove: a delegated scope taken before its descendant moved runs at
// the descendant's new location (the fence's Refresh), and the refreshed scope is still the
// delegated one: it reloads the same descendant only, and checks the key and the key's tenant
// again (a suspension of the key's tenant, or a revocation, still stops it). Nothing lands in
// the key's own tenant.
func TestDelegatedFenceFollowsAMove(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newDelegateEnv(t)
	scope := func(key string) memory.Scope {
		h, err := e.resolver.ResolveAs(ctx, key, "acme/u-1")
		require.NoError(t, err)
		require.Equal(t, "acme/u-1", h.TenantID)
		keyID, _, err := registry.ParseKey(key)
		require.NoError(t, err)
		return h.KeyScope(keyID, 5*time.Second)
	}
	add := func(s memory.Scope, name string) error {
		_, err := e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: name, DocumentType: "text", Content: "moved write"})
		return err
	}
	move := func(tier registry.Tier) {
		t.Helper()
		_, err := e.prov.MoveTenant(ctx, "acme/u-1", provision.MoveParams{Tier: tier})
		require.NoError(t, err)
	}

	// A scope taken in the shared tier writes after a move to the schema tier.
	s := scope(e.delegate)
	move(registry.TierSchema)
	require.NoError(t, add(s, "after-move"))
	tn, err := e.prov.GetTenant(ctx, "acme/u-1")
	require.NoError(t, err)
	require.Equal(t, registry.TierSchema, tn.Tier)
	require.Equal(t, 2, e.stats(t, e.own["acme/u-1"]).DocumentCount, "the write landed in the moved descendant")

	// Stale again (moved back), and the key's tenant suspended: the refreshed scope still checks it.
	s = scope(e.delegate)
	move(registry.TierShared)
	_, err = e.prov.SuspendTenant(ctx, "acme")
	require.NoError(t, err)
	require.ErrorIs(t, add(s, "parent-suspended"), memory.ErrFenced, "a refreshed delegated scope checks the key's tenant")
	_, err = e.prov.ResumeTenant(ctx, "acme")
	require.NoError(t, err)

	waitUntil(t, 10*time.Second, "parent served again", func() bool {
		_, err := e.resolver.ResolveAs(ctx, e.delegate, "acme/u-1")
		return err == nil
	})
	// Stale again, and the key revoked: the refreshed scope still checks the key.
	s = scope(e.delegate)
	move(registry.TierSchema)
	keyID, _, err := registry.ParseKey(e.delegate)
	require.NoError(t, err)
	require.NoError(t, e.prov.RevokeKey(ctx, "acme", keyID))
	require.ErrorIs(t, add(s, "key-revoked"), routing.ErrKeyRevoked, "a refreshed delegated scope checks the key")

	require.Equal(t, 2, e.stats(t, e.own["acme/u-1"]).DocumentCount, "only the first write landed")
	require.Equal(t, 0, e.stats(t, e.plain).DocumentCount, "nothing landed in the key's own tenant")
}

// TestDescendantCreatedOnFirstUse: a create_descendants key registers a missing descendant in
// the shared tier on its first request, audited; a delegate-only key does not; nothing outside
// the subtree is ever created; and the router role's one registry write, the SECURITY DEFINER
// function, re-checks the key and the id itself.
func TestDescendantCreatedOnFirstUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newDelegateEnv(t)

	res := e.as(t, e.creator, "acme/new/u-9", http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "first", "document_type": "text", "content": "the first document of a new user",
	})
	require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	tn, err := e.prov.GetTenant(ctx, "acme/new/u-9")
	require.NoError(t, err)
	require.Equal(t, registry.TierShared, tn.Tier)
	require.Equal(t, registry.StatusActive, tn.Status)
	require.Equal(t, registry.LocalPlacement, tn.PlacementID)
	require.Positive(t, tn.MigrationVersion)
	var st memory.Statistics
	e.as(t, e.creator, "acme/new/u-9", http.MethodGet, "/v1/statistics", nil).decode(t, &st)
	require.Equal(t, 1, st.DocumentCount)
	// The delegate-only key reaches it now, and the parent's own data is untouched.
	require.Equal(t, http.StatusOK, e.as(t, e.delegate, "acme/new/u-9", http.MethodGet, "/v1/statistics", nil).status)
	require.Zero(t, e.stats(t, e.plain).DocumentCount)

	keyID, _, err := registry.ParseKey(e.creator)
	require.NoError(t, err)
	evs, err := registry.AuditLog(ctx, e.admin, "acme/new/u-9")
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "created", evs[0].Event)
	require.Equal(t, "router", evs[0].Actor)
	require.Equal(t, "acme", evs[0].Detail["parent"])
	require.Equal(t, keyID, evs[0].Detail["key_id"])
	require.Equal(t, true, evs[0].Detail["on_first_use"])
	parentEvs, err := registry.AuditLog(ctx, e.admin, "acme")
	require.NoError(t, err)
	require.Equal(t, "descendant_created", parentEvs[len(parentEvs)-1].Event)

	// A delegate-only key creates nothing: 404 like any unknown tenant.
	res = e.as(t, e.delegate, "acme/new/u-10", http.MethodGet, "/v1/statistics", nil)
	require.Equal(t, http.StatusNotFound, res.status)
	_, err = e.prov.GetTenant(ctx, "acme/new/u-10")
	require.ErrorIs(t, err, registry.ErrNotFound)
	// A suspended descendant is not re-created or revealed.
	_, err = e.prov.SuspendTenant(ctx, "acme/u-3")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "404 for the suspended descendant", func() bool {
		return e.as(t, e.creator, "acme/u-3", http.MethodGet, "/v1/statistics", nil).status == http.StatusNotFound
	})
	tn, err = e.prov.GetTenant(ctx, "acme/u-3")
	require.NoError(t, err)
	require.Equal(t, registry.StatusSuspended, tn.Status)

	// The router role calls the function directly, as a compromised router could.
	pool := routerRolePool(t, e.url)
	for _, c := range []struct {
		key, id string
		want    registry.DescendantOutcome
	}{
		{e.creator, "acmex/evil", registry.DescendantRefused},
		{e.creator, "other/evil", registry.DescendantRefused},
		{e.creator, "acme", registry.DescendantRefused},
		{e.creator, "acme/../other/evil", registry.DescendantRefused},
		{e.creator, "acme//evil", registry.DescendantRefused},
		{e.creator, "acme/evil/", registry.DescendantRefused},
		{e.creator, "acme/evil\n", registry.DescendantRefused},
		{e.creator, "acme/" + strings.Repeat("e", 260), registry.DescendantRefused},
		{e.delegate, "acme/evil", registry.DescendantRefused}, // no create_descendants
		{e.plain, "acme/evil", registry.DescendantRefused},
		{e.creator, "acme/u-1", registry.DescendantExists},
		{e.creator, "acme/direct", registry.DescendantCreated},
	} {
		k, _, err := registry.ParseKey(c.key)
		require.NoError(t, err)
		out, err := registry.CreateDescendant(ctx, pool, k, c.id)
		require.NoError(t, err, c.id)
		require.Equal(t, c.want, out, "%q", c.id)
	}
	// It may not write the registry otherwise.
	_, err = pool.Exec(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status)
		VALUES ('other/evil', 'shared', 'tenantmem_shared', 'active')`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%v", err)
	require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code)
	// Revoked: refused.
	require.NoError(t, e.prov.RevokeKey(ctx, "acme", keyID))
	out, err := registry.CreateDescendant(ctx, pool, keyID, "acme/after-revoke")
	require.NoError(t, err)
	require.Equal(t, registry.DescendantRefused, out)
	for _, id := range []string{"acmex/evil", "other/evil", "acme/evil", "acme/after-revoke"} {
		_, err := e.prov.GetTenant(ctx, id)
		require.ErrorIs(t, err, registry.ErrNotFound, id)
	}
}

// TestRecreatedParentInheritsNoDescendants: deleting acme leaves acme/u-1 (a tenant of its own);
// a new tenant acme, created later under the same id, cannot reach it with a delegate key: only
// descendants registered after the key's tenant are its own.
func TestRecreatedParentInheritsNoDescendants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newDelegateEnv(t)
	require.Equal(t, http.StatusOK, e.as(t, e.delegate, "acme/u-1", http.MethodGet, "/v1/statistics", nil).status)
	notFound := e.as(t, e.delegate, "acme/never", http.MethodGet, "/v1/statistics", nil)
	require.NoError(t, e.prov.DeleteTenant(ctx, "acme"))
	e.tenant("acme", registry.TierShared)
	k, err := e.prov.IssueKeyWith(ctx, registry.KeyIssueParams{TenantID: "acme", Delegate: true, CreateDescendants: true})
	require.NoError(t, err)
	for _, target := range []string{"acme/u-1", "acme/team/u-2", "acme/u-3"} {
		res := e.as(t, k.Key, target, http.MethodGet, "/v1/statistics", nil)
		require.Equal(t, http.StatusNotFound, res.status, target)
		require.Equal(t, string(notFound.body), string(res.body), target)
		e.requireNoCanary(t, res)
	}
	// The old descendant keeps its own key and data.
	require.Equal(t, 1, e.stats(t, e.own["acme/u-1"]).DocumentCount)
}

// routerRolePool connects as the router role.
func routerRolePool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.WithUser(t, url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}
