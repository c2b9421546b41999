package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/api"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestOpenAPIServed: each server serves its description at GET /openapi.json without
// authentication, and it is the file of the repository.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		json func() ([]byte, error)
	}{{"router", api.RouterJSON}, {"provisioner", api.ProvisionerJSON}} {
		want, err := tc.json()
		require.NoError(t, err)
		require.Contains(t, string(want), `"openapi":"3.1.0"`, tc.name)
	}
	a := newAdminEnv(t, true)
	res := a.doWith(http.MethodGet, "/openapi.json", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	want, _ := api.ProvisionerJSON()
	require.JSONEq(t, string(want), string(res.body))
	require.Equal(t, echo.MIMEApplicationJSON, res.header.Get("Content-Type"))
}

// echoOf is the echo instance behind a test server, for its route list.
func echoOf(t *testing.T, h http.Handler) *echo.Echo {
	t.Helper()
	e, ok := h.(*echo.Echo)
	require.True(t, ok)
	return e
}

// TestRouterConformsToOpenAPI runs the router's real handlers on real PostgreSQL (as the
// non-superuser router role), validates every request and response against
// api/router.openapi.yaml, and fails when a served route is not described, when a described
// (path, method, status), parameter, body member or error code was never exercised, or when an
// exchange did not conform. Each status is provoked the way it happens in production.
func TestRouterConformsToOpenAPI(t *testing.T) {
	t.Parallel()
	// A reranker that is down: rerank=true degrades instead of failing.
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadReranker := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	var notReady atomic.Bool
	e := newRouterEnvWith(t, routerOptions{bodyLimit: 64 << 10, rerankURL: deadReranker,
		ready: func(context.Context) error {
			if notReady.Load() {
				return provision.ErrNotInitialized
			}
			return nil
		}})
	sc := newSpecChecker(t, "router", api.Router())
	sc.wrap(e.srv)
	ctx := context.Background()

	// Service routes.
	e.ok(t, "", http.MethodGet, "/openapi.json", nil, http.StatusOK, nil)
	e.ok(t, "", http.MethodGet, "/healthz", nil, http.StatusOK, nil)
	e.ok(t, "", http.MethodGet, "/readyz", nil, http.StatusOK, nil)
	notReady.Store(true)
	e.ok(t, "", http.MethodGet, "/readyz", nil, http.StatusServiceUnavailable, nil)
	notReady.Store(false)

	// The success paths, every parameter and body member.
	key := e.tenant("conform/main", registry.TierSchema)
	var added memory.DocumentAddResult
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "Runbook", "document_type": "markdown", "id_at_origin": "wiki-42",
		"metadata": map[string]any{"space": "ops"}, "document_date": "2024-05-01",
		"chunking": map[string]any{"parent_size": 64, "child_size": 32, "parent_overlap": 4, "child_overlap": 2},
		"content":  "# Deploys\n\n" + strings.Repeat("We deploy on Tuesdays, after the database backup has finished. ", 20),
	}, http.StatusCreated, &added)
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "Runbook", "document_type": "markdown", "id_at_origin": "wiki-42",
		"content": "# Deploys\n\nWe deploy on Tuesdays.", "document_date": "2024-05-01T10:00:00Z",
	}, http.StatusOK, &added)
	mail := e.doWith(t, http.MethodPost, "/v1/documents", map[string]any{"document_name": "Lunch", "document_type": "email",
		"content": "Subject: lunch\n\nShall we meet at noon near the harbour?"},
		map[string]string{"Authorization": "Bearer " + key, "Idempotency-Key": "add-lunch-1"})
	require.Equal(t, http.StatusCreated, mail.status, string(mail.body))
	replay := e.doWith(t, http.MethodPost, "/v1/documents", map[string]any{"document_name": "Lunch", "document_type": "email",
		"content": "Subject: lunch\n\nShall we meet at noon near the harbour?"},
		map[string]string{"Authorization": "Bearer " + key, "Idempotency-Key": "add-lunch-1"})
	require.Equal(t, "true", replay.header.Get("Idempotent-Replayed"))
	var mailDoc memory.DocumentAddResult
	mail.decode(t, &mailDoc)
	// A document given already chunked, one leaf with the client's vector.
	leaf := make([]float32, routerTestDim)
	leaf[1] = 1
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "Prechunked", "document_type": "markdown",
		"id_at_origin": "pre-1", "chunks": []map[string]any{
			{"content": "Deploys and rollbacks", "level": 1},
			{"content": "We deploy on Tuesdays.", "parent": 0, "metadata": map[string]any{"page": 3}, "embedding": leaf},
			{"content": "Rollbacks revert the tag.", "parent": 0},
		}}, http.StatusCreated, nil)
	// A bulk import: a document with content, one as chunks, a blank line and a refused line.
	ndjson := func(key string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/x-ndjson"}
	}
	imp := e.doWith(t, http.MethodPost, "/v1/documents/import", `{"document_name": "i1", "document_type": "text", "content": "Imported: backups run nightly."}

{"document_name": "i2", "document_type": "text", "id_at_origin": "imp-2", "chunks": [{"content": "Imported as a chunk."}]}
{"document_name": "i3", "document_type": "text", "content": "x", "tenant_id": "other"}
`, ndjson(key))
	require.Equal(t, http.StatusOK, imp.status, string(imp.body))
	var imported httpapi.ImportResponse
	imp.decode(t, &imported)
	require.Equal(t, 2, imported.Documents)
	require.Equal(t, 1, imported.FailedCount)
	require.Equal(t, "tenant_id", imported.Failed[0].Error.Field)

	e.ok(t, key, http.MethodGet, "/v1/documents?limit=5&offset=0&document_type=markdown&id_at_origin=wiki-42&order_by=updated_at&order=desc&metadata_filter="+
		url.QueryEscape(`{"space":"ops"}`), nil, http.StatusOK, nil)
	e.ok(t, key, http.MethodGet, "/v1/documents/"+added.DocumentID+"?include_chunks=true", nil, http.StatusOK, nil)
	e.ok(t, key, http.MethodGet, "/v1/documents/"+added.DocumentID, nil, http.StatusOK, nil)
	emb := make([]float32, routerTestDim)
	emb[0] = 1
	for _, body := range []map[string]any{
		{"query_text": "when do we deploy?", "search_type": "hybrid", "limit": 5, "fusion": "rrf", "alpha": 0.3,
			"recall_target": 0.9, "include_parent_context": true, "include_documents": true,
			"id_at_origin": "wiki-42", "id_at_origins": []string{"wiki-42"}, "document_types": []string{"markdown"},
			"metadata_filter": map[string]any{"space": "ops"}, "date_from": "2024-01-01", "date_to": "2024-12-31T00:00:00Z"},
		{"query_text": "deploy", "search_type": "text", "rerank": true, "rerank_top_k": 5,
			"chunk_metadata_filter": map[string]any{"section": "Deploys"}},
		{"query_embedding": emb, "search_type": "vector", "fusion": "dbsf"},
	} {
		e.ok(t, key, http.MethodPost, "/v1/search", body, http.StatusOK, nil)
	}
	e.ok(t, key, http.MethodGet, "/v1/search?q=backup&limit=3", nil, http.StatusOK, nil)
	waitUntil(t, 30*time.Second, "the search history", func() bool {
		var h struct {
			History []memory.SearchHistoryEntry `json:"history"`
		}
		e.ok(t, key, http.MethodGet, "/v1/search/history?limit=10", nil, http.StatusOK, &h)
		return len(h.History) > 0
	})
	e.ok(t, key, http.MethodGet, "/v1/statistics", nil, http.StatusOK, nil)
	e.ok(t, key, http.MethodGet, "/v1/embeddings/status", nil, http.StatusOK, nil)
	e.ok(t, key, http.MethodPost, "/v1/embeddings/retry", nil, http.StatusOK, nil)
	deleted := e.doWith(t, http.MethodPost, "/v1/documents/delete", map[string]any{"document_ids": []string{mailDoc.DocumentID}},
		map[string]string{"Authorization": "Bearer " + key, "Idempotency-Key": "delete-lunch-1"})
	require.Equal(t, http.StatusOK, deleted.status, string(deleted.body))
	e.ok(t, key, http.MethodPost, "/v1/documents/delete", map[string]any{"metadata_filter": map[string]any{"space": "none"}},
		http.StatusOK, nil)
	e.ok(t, key, http.MethodDelete, "/v1/documents/"+added.DocumentID, nil, http.StatusNoContent, nil)

	// Statuses of single routes.
	ghost := "123e4567-e89b-12d3-a456-426614174000"
	e.ok(t, key, http.MethodGet, "/v1/documents/"+ghost, nil, http.StatusNotFound, nil)
	e.ok(t, key, http.MethodDelete, "/v1/documents/"+ghost, nil, http.StatusNotFound, nil)
	e.ok(t, key, http.MethodGet, "/v1/documents/a/b", nil, http.StatusBadRequest, nil)
	e.ok(t, key, http.MethodDelete, "/v1/documents/not-a-uuid", nil, http.StatusBadRequest, nil)
	reuse := func(path string, first, second any) {
		h := map[string]string{"Authorization": "Bearer " + key, "Idempotency-Key": "reused-" + strings.ReplaceAll(path, "/", "-")}
		require.Equal(t, http.StatusOK/100, e.doWith(t, http.MethodPost, path, first, h).status/100)
		res := e.doWith(t, http.MethodPost, path, second, h)
		require.Equal(t, http.StatusUnprocessableEntity, res.status, string(res.body))
	}
	reuse("/v1/documents", map[string]any{"document_name": "A", "document_type": "text", "content": "first"},
		map[string]any{"document_name": "A", "document_type": "text", "content": "second"})
	reuse("/v1/documents/delete", map[string]any{"document_ids": []string{ghost}},
		map[string]any{"metadata_filter": map[string]any{"x": 1}})
	big := strings.Repeat("x", 70<<10)
	for _, path := range []string{"/v1/documents", "/v1/documents/delete", "/v1/search"} {
		e.ok(t, key, http.MethodPost, path, `{"query_text": "`+big+`"}`, http.StatusRequestEntityTooLarge, nil)
	}
	// An import has no body limit, but each of its lines has.
	long := e.doWith(t, http.MethodPost, "/v1/documents/import", `{"document_name": "big", "document_type": "text", "content": "`+big+`"}`,
		ndjson(key))
	require.Equal(t, http.StatusRequestEntityTooLarge, long.status, string(long.body))
	require.Equal(t, "payload_too_large", long.problem(t).Code)
	// A vector search whose query cannot be embedded: 503.
	e.embedder.failWith(errProviderDown)
	e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "deploy", "search_type": "vector"},
		http.StatusServiceUnavailable, nil)
	e.embedder.failWith(nil)
	// A storage quota: 413 quota_exceeded.
	quota := e.tenant("conform/quota", registry.TierShared)
	_, err = e.prov.SetTenantLimits(ctx, "conform/quota", registry.TenantLimits{MaxDocuments: ptr[int64](1)})
	require.NoError(t, err)
	e.ok(t, quota, http.MethodPost, "/v1/documents", map[string]any{"document_name": "1", "document_type": "text", "content": "one"},
		http.StatusCreated, nil)
	waitUntil(t, 10*time.Second, "the quota", func() bool {
		return e.do(t, quota, http.MethodPost, "/v1/documents", map[string]any{"document_name": "2", "document_type": "text",
			"content": "two"}).status == http.StatusRequestEntityTooLarge
	})
	full := e.doWith(t, http.MethodPost, "/v1/documents/import", `{"document_name": "2", "document_type": "text", "content": "two"}`,
		ndjson(quota))
	require.Equal(t, http.StatusRequestEntityTooLarge, full.status, string(full.body))
	require.Equal(t, "quota_exceeded", full.problem(t).Code)

	// Statuses every /v1 route answers: each route with a valid request, from a tenant in the
	// state that causes it.
	type call struct {
		method, path string
		body         any
	}
	routes := []call{
		{http.MethodPost, "/v1/documents", map[string]any{"document_name": "n", "document_type": "text", "content": "c"}},
		{http.MethodGet, "/v1/documents", nil},
		{http.MethodGet, "/v1/documents/" + ghost, nil},
		{http.MethodDelete, "/v1/documents/" + ghost, nil},
		{http.MethodPost, "/v1/documents/delete", map[string]any{"document_ids": []string{ghost}}},
		{http.MethodPost, "/v1/documents/import", `{"document_name": "n", "document_type": "text", "content": "c"}`},
		{http.MethodPost, "/v1/search", map[string]any{"query_text": "deploy"}},
		{http.MethodGet, "/v1/search?q=deploy", nil},
		{http.MethodGet, "/v1/search/history", nil},
		{http.MethodGet, "/v1/statistics", nil},
		{http.MethodGet, "/v1/embeddings/status", nil},
		{http.MethodPost, "/v1/embeddings/retry", nil},
	}
	// eachWith sends every route with the headers, expects want from each and returns the
	// answers' bodies.
	eachWith := func(h map[string]string, want int, query string) [][]byte {
		t.Helper()
		var bodies [][]byte
		for _, r := range routes {
			path := r.path
			if query != "" {
				sep := "?"
				if strings.Contains(path, "?") {
					sep = "&"
				}
				path += sep + query
			}
			res := e.doWith(t, r.method, path, r.body, h)
			require.Equal(t, want, res.status, "%s %s %v: %s", r.method, path, h, res.body)
			bodies = append(bodies, res.body)
		}
		return bodies
	}
	each := func(key string, want int, query string) {
		t.Helper()
		h := map[string]string{}
		if key != "" {
			h["Authorization"] = "Bearer " + key
		}
		eachWith(h, want, query)
	}
	// 400: a query parameter naming a tenant; 401: no key, and an invalid one.
	each(key, http.StatusBadRequest, "tenant_id=other")
	each("", http.StatusUnauthorized, "")
	each("tm_notakey", http.StatusUnauthorized, "")

	// Delegation: a delegate key of conform/acme acts for conform/acme/u-1 on every route
	// (Tenantmem-Act-As), and the rows are u-1's; a tenant outside the key's subtree, one that is
	// not registered and the key's own tenant named in the header are one 404; a malformed
	// header is 400 naming it; a key without the delegate scope is 403; an invalid key stays 401.
	parentKey := e.tenant("conform/acme", registry.TierShared)
	delegate, err := e.prov.IssueKeyWith(ctx, registry.KeyIssueParams{TenantID: "conform/acme", Delegate: true})
	require.NoError(t, err)
	_, err = e.prov.CreateDescendants(ctx, provision.DescendantsCreateParams{Parent: "conform/acme", IDs: []string{"conform/acme/u-1"}})
	require.NoError(t, err)
	e.tenant("conform/acmex/u-1", registry.TierShared) // outside the subtree, with a common prefix
	actAs := func(key, target string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + key, httpapi.HeaderActAs: target}
	}
	u1 := actAs(delegate.Key, "conform/acme/u-1")
	var dAdded memory.DocumentAddResult
	res := e.doWith(t, http.MethodPost, "/v1/documents", map[string]any{"document_name": "Delegated", "document_type": "text",
		"content": "The zebra crossing is painted on Mondays."}, u1)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	res.decode(t, &dAdded)
	importAs := map[string]string{"Content-Type": "application/x-ndjson"}
	for k, v := range u1 {
		importAs[k] = v
	}
	for _, c := range []struct {
		method, path string
		body         any
		header       map[string]string
		want         int
	}{
		{http.MethodGet, "/v1/documents", nil, u1, http.StatusOK},
		{http.MethodGet, "/v1/documents/" + dAdded.DocumentID, nil, u1, http.StatusOK},
		{http.MethodPost, "/v1/documents/import", `{"document_name": "d2", "document_type": "text", "content": "Imported for u-1."}`,
			importAs, http.StatusOK},
		{http.MethodPost, "/v1/search", map[string]any{"query_text": "zebra"}, u1, http.StatusOK},
		{http.MethodGet, "/v1/search?q=zebra", nil, u1, http.StatusOK},
		{http.MethodGet, "/v1/search/history", nil, u1, http.StatusOK},
		{http.MethodGet, "/v1/embeddings/status", nil, u1, http.StatusOK},
		{http.MethodPost, "/v1/embeddings/retry", nil, u1, http.StatusOK},
		{http.MethodPost, "/v1/documents/delete", map[string]any{"document_ids": []string{ghost}}, u1, http.StatusOK},
	} {
		res := e.doWith(t, c.method, c.path, c.body, c.header)
		require.Equal(t, c.want, res.status, "%s %s: %s", c.method, c.path, res.body)
	}
	var st memory.Statistics
	res = e.doWith(t, http.MethodGet, "/v1/statistics", nil, u1)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	res.decode(t, &st)
	require.EqualValues(t, 2, st.DocumentCount, "the delegated writes are u-1's")
	require.Zero(t, e.stats(t, parentKey).DocumentCount, "and not the key's own tenant's")
	res = e.doWith(t, http.MethodDelete, "/v1/documents/"+dAdded.DocumentID, nil, u1)
	require.Equal(t, http.StatusNoContent, res.status, string(res.body))
	notFound := eachWith(actAs(delegate.Key, "conform/acmex/u-1"), http.StatusNotFound, "")
	for _, target := range []string{"conform/acme/u-404", "conform/acme", "conform/other"} {
		require.Equal(t, notFound, eachWith(actAs(delegate.Key, target), http.StatusNotFound, ""),
			"%s: one answer for every tenant the key may not reach", target)
	}
	for _, bad := range []string{"conform/acme/u-1/", "conform/acme/../acmex/u-1", "conform%2Facme%2Fu-1", "conform/acme/U 1"} {
		for _, b := range eachWith(actAs(delegate.Key, bad), http.StatusBadRequest, "") {
			require.Contains(t, string(b), `"field":"`+httpapi.HeaderActAs+`"`, bad)
		}
	}
	eachWith(actAs(parentKey, "conform/acme/u-1"), http.StatusForbidden, "")
	eachWith(actAs("tm_notakey", "conform/acme/u-1"), http.StatusUnauthorized, "")
	// 403: a suspended tenant.
	suspended := e.tenant("conform/suspended", registry.TierShared)
	_, err = e.prov.SuspendTenant(ctx, "conform/suspended")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "the suspension", func() bool {
		return e.do(t, suspended, http.MethodGet, "/v1/statistics", nil).status == http.StatusForbidden
	})
	each(suspended, http.StatusForbidden, "")
	// 429: a tenant over its request rate.
	noisy := e.tenant("conform/noisy", registry.TierShared)
	_, err = e.prov.SetTenantLimits(ctx, "conform/noisy", registry.TenantLimits{RequestsPerSecond: ptr(0.001), Burst: ptr(1)})
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "the rate limit", func() bool {
		return e.do(t, noisy, http.MethodGet, "/v1/statistics", nil).status == http.StatusTooManyRequests
	})
	each(noisy, http.StatusTooManyRequests, "")
	// 503: a tenant being provisioned (or moved).
	moving := e.tenant("conform/moving", registry.TierShared)
	_, err = e.admin.Exec(ctx, `UPDATE tenantmem_control.tenants SET status = 'provisioning' WHERE tenant_id = $1`, "conform/moving")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "the status change", func() bool {
		return e.do(t, moving, http.MethodGet, "/v1/statistics", nil).status == http.StatusServiceUnavailable
	})
	each(moving, http.StatusServiceUnavailable, "")
	// 500: a tenant whose schema an operator broke (its tables renamed): an unexpected
	// database error, answered with the generic message and the request id.
	broken := e.tenant("conform/broken", registry.TierSchema)
	schema := e.schemaOf(t, "conform/broken")
	rows, err := e.admin.Query(ctx, `SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = $1`, strings.Trim(schema, `"`))
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, tables)
	for _, tb := range tables {
		_, err := e.admin.Exec(ctx, `ALTER TABLE `+schema+`.`+tb+` RENAME TO `+strings.Trim(tb, `"`)+`_broken`)
		require.NoError(t, err)
	}
	each(broken, http.StatusInternalServerError, "")

	sc.finish(echoOf(t, e.srv.Config.Handler))
}

// TestProvisionerConformsToOpenAPI is TestRouterConformsToOpenAPI for the provisioning API and
// api/provisioner.openapi.yaml.
func TestProvisionerConformsToOpenAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAdminEnv(t, true)
	sc := newSpecChecker(t, "provisioner", api.Provisioner())
	sc.wrap(e.srv)
	// An uninitialised deployment: not ready, and no tenant can be created.
	un := newAdminEnv(t, false)
	sc.wrap(un.srv)
	noAuth := map[string]string{}
	badAuth := map[string]string{"Authorization": "Bearer not-the-admin-token-at-all"}
	must := func(res response, want int) response {
		t.Helper()
		require.Equal(t, want, res.status, string(res.body))
		return res
	}
	must(e.doWith(http.MethodGet, "/openapi.json", nil, noAuth), http.StatusOK)
	must(e.doWith(http.MethodGet, "/healthz", nil, noAuth), http.StatusOK)
	must(e.doWith(http.MethodGet, "/readyz", nil, noAuth), http.StatusOK)
	must(un.doWith(http.MethodGet, "/readyz", nil, noAuth), http.StatusServiceUnavailable)
	must(un.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "early", "tier": "shared"}), http.StatusServiceUnavailable)
	must(un.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"early"}}), http.StatusServiceUnavailable)
	must(un.do(http.MethodPost, "/v1/tenants/early/descendants", map[string]any{"tenant_ids": []string{"early/u-1"}}),
		http.StatusServiceUnavailable)

	// Tenants.
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/a", "tier": "schema", "placement": "local",
		"text_search_config": "simple"}), http.StatusCreated)
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/b", "tier": "shared"}), http.StatusCreated)
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/a", "tier": "schema"}), http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "Org A", "tier": "schema"}), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/c", "tier": "schema", "placement": "nowhere"}), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/tenants", `{"tenant_id": "`+strings.Repeat("x", 2<<20)+`"}`), http.StatusRequestEntityTooLarge)
	must(e.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"bulk/1", "bulk/2"}}), http.StatusCreated)
	must(e.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"bulk/2", "bulk/3"}}), http.StatusCreated)
	must(e.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"bulk/4", "Bad Id"}}), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/bulk/tenants", `{"tier": "shared", "tenant_ids": ["`+strings.Repeat("x", 2<<20)+`"]}`), http.StatusRequestEntityTooLarge)
	must(e.do(http.MethodGet, "/v1/tenants?limit=1", nil), http.StatusOK)
	must(e.do(http.MethodGet, "/v1/tenants?limit=10&after=org%2Fa", nil), http.StatusOK)
	must(e.do(http.MethodGet, "/v1/tenants?limit=0", nil), http.StatusBadRequest)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fa", nil), http.StatusOK)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fghost", nil), http.StatusNotFound)
	must(e.do(http.MethodGet, "/v1/tenants/Org%20A", nil), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/suspend", nil), http.StatusOK)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/resume", nil), http.StatusOK)
	// A tenant being provisioned cannot be suspended or resumed yet.
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/busy", "tier": "shared"}), http.StatusCreated)
	_, err := e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET status = 'provisioning' WHERE tenant_id = 'org/busy'`)
	require.NoError(t, err)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fbusy/suspend", nil), http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fbusy/resume", nil), http.StatusConflict)

	// Keys, with and without scopes.
	var issued, scoped registry.IssuedKey
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/keys", nil), http.StatusCreated).decode(t, &issued)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/keys", map[string]any{"delegate": true, "create_descendants": true}),
		http.StatusCreated).decode(t, &scoped)
	require.True(t, scoped.Delegate && scoped.CreateDescendants)
	require.Equal(t, "create_descendants",
		must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/keys", map[string]any{"create_descendants": true}), http.StatusBadRequest).problem(t).Field)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/keys", `{"delegate": true`+strings.Repeat(" ", 2<<20)+`}`), http.StatusRequestEntityTooLarge)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fbusy/keys", nil), http.StatusConflict)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fa/keys", nil), http.StatusOK)
	must(e.do(http.MethodDelete, "/v1/tenants/org%2Fa/keys/"+issued.KeyID, nil), http.StatusNoContent)
	must(e.do(http.MethodDelete, "/v1/tenants/org%2Fa/keys/"+issued.KeyID+"x", nil), http.StatusBadRequest)
	must(e.do(http.MethodDelete, "/v1/tenants/org%2Fb/keys/"+issued.KeyID, nil), http.StatusNotFound)

	// Descendants: shared-tier tenants below a tenant, in bulk, without keys.
	var desc provision.DescendantsCreateResult
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/descendants", map[string]any{"tenant_ids": []string{"org/a/u-1", "org/a/u-2"},
		"placement": "local"}), http.StatusCreated).decode(t, &desc)
	require.Equal(t, []string{"org/a/u-1", "org/a/u-2"}, desc.Created)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/descendants", map[string]any{"tenant_ids": []string{"org/a/u-2", "org/a/u-3"}}),
		http.StatusCreated).decode(t, &desc)
	require.Equal(t, []string{"org/a/u-2"}, desc.Existing)
	for field, body := range map[string]any{
		"tenant_ids[1]": map[string]any{"tenant_ids": []string{"org/a/u-4", "org/ab/u-1"}},
		"tenant_ids":    map[string]any{"tenant_ids": []string{}},
		"placement":     map[string]any{"tenant_ids": []string{"org/a/u-4"}, "placement": "nowhere"},
	} {
		require.Equal(t, field, must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/descendants", body), http.StatusBadRequest).problem(t).Field)
	}
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fbusy/descendants", map[string]any{"tenant_ids": []string{"org/busy/u-1"}}),
		http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fa/descendants", `{"tenant_ids": ["`+strings.Repeat("x", 2<<20)+`"]}`),
		http.StatusRequestEntityTooLarge)

	// Limits.
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fa/limits", nil), http.StatusOK)
	must(e.do(http.MethodPut, "/v1/tenants/org%2Fa/limits", map[string]any{"requests_per_second": 2.5, "burst": 5,
		"max_concurrent": 2, "max_documents": 0, "max_chunks": nil, "max_content_bytes": 1 << 30}), http.StatusOK)
	must(e.do(http.MethodPut, "/v1/tenants/org%2Fa/limits", `{"max_chunks": -1}`), http.StatusBadRequest)
	must(e.do(http.MethodPut, "/v1/tenants/org%2Fa/limits", `{"max_chunks": 1`+strings.Repeat(" ", 2<<20)+`}`), http.StatusRequestEntityTooLarge)

	// Backups and restores: org/full holds two documents and a quota of one.
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/full", "tier": "schema"}), http.StatusCreated)
	fullTenant, err := e.prov.GetTenant(ctx, "org/full")
	require.NoError(t, err)
	builtin, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	engine, err := memory.New(memory.Config{Embedder: builtin})
	require.NoError(t, err)
	for i := range 2 {
		_, err := engine.AddDocument(ctx, memory.Scope{Pool: e.pool, Schema: fullTenant.SchemaName, OwnerID: fullTenant.ID},
			memory.DocumentAddParams{DocumentName: fmt.Sprint("doc ", i), DocumentType: "text", Content: "We deploy on Tuesdays."})
		require.NoError(t, err)
	}
	must(e.do(http.MethodPut, "/v1/tenants/org%2Ffull/limits", map[string]any{"max_documents": 1}), http.StatusOK)
	fullArchive := must(e.do(http.MethodGet, "/v1/tenants/org%2Ffull/backup?include_key_hashes=true&skip_search_history=false", nil),
		http.StatusOK).body
	aArchive := must(e.do(http.MethodGet, "/v1/tenants/org%2Fa/backup", nil), http.StatusOK).body
	archiveAs := func(h map[string]string, ct string) map[string]string {
		out := map[string]string{"Content-Type": ct}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	admin := map[string]string{"Authorization": "Bearer " + testToken}
	restore := func(query string, body []byte, want int) response {
		t.Helper()
		return must(e.doWith(http.MethodPost, "/v1/tenants/restore"+query, body, archiveAs(admin, httpapi.ArchiveContentType)), want)
	}
	restore("?as=org%2Fcopy&tier=shared&placement=local", aArchive, http.StatusCreated)
	must(e.doWith(http.MethodPost, "/v1/tenants/restore?replace=true", aArchive, archiveAs(admin, "application/octet-stream")), http.StatusOK)
	restore("", aArchive, http.StatusConflict)
	require.Equal(t, "quota_exceeded", restore("?as=org%2Fcopy2", fullArchive, http.StatusRequestEntityTooLarge).problem(t).Code)
	require.Equal(t, "archive", restore("?as=org%2Ftrunc", aArchive[:len(aArchive)/2], http.StatusBadRequest).problem(t).Field)
	restore("?as=org%2Fx&tier=gold", aArchive, http.StatusBadRequest)
	must(un.doWith(http.MethodPost, "/v1/tenants/restore", aArchive, archiveAs(admin, httpapi.ArchiveContentType)), http.StatusServiceUnavailable)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fbusy/backup", nil), http.StatusConflict)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Fa/backup?include_key_hashes=maybe", nil), http.StatusBadRequest)

	// Moves.
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/mover", "tier": "shared"}), http.StatusCreated)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fmover/move", map[string]any{"tier": "schema", "placement": "local"}), http.StatusOK)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fmover/move", map[string]any{"tier": "schema"}), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fbusy/move", map[string]any{"tier": "schema"}), http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fmover/move", `{"tier": "`+strings.Repeat("x", 2<<20)+`"}`), http.StatusRequestEntityTooLarge)
	// Moves a crash left unfinished (a second provisioner that stops at a step): one before its
	// flip (rolled back), one after (finished by sending it again).
	crashAt := map[string]string{"org/crash": provision.StepMoveCopied, "org/flip": provision.StepMoveFlipped}
	crashing, err := provision.New(provision.Config{Pool: e.pool, Credentials: testCredentials(t),
		Hook: func(_ context.Context, step, id string) error {
			if crashAt[id] == step {
				return errors.New("crash at " + step)
			}
			return nil
		}})
	require.NoError(t, err)
	t.Cleanup(crashing.Close)
	for id := range crashAt {
		must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": id, "tier": "shared"}), http.StatusCreated)
		_, err := crashing.MoveTenant(ctx, id, provision.MoveParams{Tier: registry.TierSchema})
		require.ErrorContains(t, err, "crash at")
	}
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fcrash/move/abort", nil), http.StatusNoContent)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fflip/move/abort", nil), http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Fflip/move", map[string]any{"tier": "schema"}), http.StatusOK)

	// Placements: one more database on the test server.
	u, err := url.Parse(pgtest.NewDatabase(t))
	require.NoError(t, err)
	port := 5432
	if p := u.Port(); p != "" {
		port, err = strconv.Atoi(p)
		require.NoError(t, err)
	}
	place := map[string]any{"name": "p2", "host": u.Hostname(), "port": port, "database": strings.TrimPrefix(u.Path, "/"),
		"max_tenants": 10, "tiers": []string{"schema", "shared"}, "description": "second", "router_password": ""}
	must(e.do(http.MethodPost, "/v1/placements", place), http.StatusCreated)
	other := map[string]any{"name": "p3", "host": u.Hostname(), "port": port, "database": strings.TrimPrefix(u.Path, "/")}
	must(e.do(http.MethodPost, "/v1/placements", other), http.StatusConflict)
	must(e.do(http.MethodPost, "/v1/placements", map[string]any{"name": "P 2"}), http.StatusBadRequest)
	must(e.do(http.MethodPost, "/v1/placements", `{"name": "`+strings.Repeat("x", 2<<20)+`"}`), http.StatusRequestEntityTooLarge)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	must(e.do(http.MethodPost, "/v1/placements", map[string]any{"name": "p4", "host": "127.0.0.1", "port": closed, "database": "x"}),
		http.StatusServiceUnavailable)
	must(e.do(http.MethodGet, "/v1/placements", nil), http.StatusOK)
	must(e.do(http.MethodGet, "/v1/placements/p2", nil), http.StatusOK)
	for _, s := range []string{"drain", "disable", "activate"} {
		must(e.do(http.MethodPost, "/v1/placements/p2/"+s, nil), http.StatusOK)
		must(e.do(http.MethodPost, "/v1/placements/ghost/"+s, nil), http.StatusNotFound)
		must(e.do(http.MethodPost, "/v1/placements/P2/"+s, nil), http.StatusBadRequest)
	}
	must(e.do(http.MethodGet, "/v1/placements/ghost", nil), http.StatusNotFound)
	must(e.do(http.MethodGet, "/v1/placements/P2", nil), http.StatusBadRequest)
	must(e.do(http.MethodDelete, "/v1/placements/local", nil), http.StatusConflict)
	must(e.do(http.MethodDelete, "/v1/placements/P2", nil), http.StatusBadRequest)
	must(e.do(http.MethodDelete, "/v1/placements/p2", nil), http.StatusNoContent)
	must(e.do(http.MethodDelete, "/v1/placements/p2", nil), http.StatusNotFound)
	// A tenant whose placement's server stopped answering: 503 for what needs its rows.
	must(e.do(http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/far", "tier": "shared"}), http.StatusCreated)
	_, err = e.pool.Exec(ctx, `INSERT INTO tenantmem_control.placements (placement_id, host, port, database_name, state)
		VALUES ('gone', '127.0.0.1', $1, 'x', 'draining')`, closed)
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET placement_id = 'gone' WHERE tenant_id = 'org/far'`)
	require.NoError(t, err)
	must(e.do(http.MethodGet, "/v1/tenants/org%2Ffar/backup", nil), http.StatusServiceUnavailable)
	must(e.do(http.MethodPost, "/v1/tenants/org%2Ffar/move", map[string]any{"tier": "schema", "placement": "local"}),
		http.StatusServiceUnavailable)

	// Every operation with a path parameter: 400 for a bad one, 404 for an unknown tenant.
	// A body that names tenants below {id} (descendants) is a function of {id}.
	type perTenant func(id string) any
	bodyFor := func(body any, id string) any {
		if f, ok := body.(perTenant); ok {
			return f(id)
		}
		return body
	}
	tenantOps := []struct {
		method, suffix string
		body           any
	}{
		{http.MethodGet, "", nil}, {http.MethodDelete, "", nil}, {http.MethodPost, "/suspend", nil}, {http.MethodPost, "/resume", nil},
		{http.MethodPost, "/keys", nil}, {http.MethodGet, "/keys", nil}, {http.MethodDelete, "/keys/0123456789abcdef", nil},
		{http.MethodPost, "/descendants", perTenant(func(id string) any { return map[string]any{"tenant_ids": []string{id + "/u-9"}} })},
		{http.MethodGet, "/limits", nil}, {http.MethodPut, "/limits", map[string]any{}},
		{http.MethodGet, "/backup", nil}, {http.MethodPost, "/move", map[string]any{"tier": "database"}},
		{http.MethodPost, "/move/abort", nil},
	}
	for _, op := range tenantOps {
		must(e.do(op.method, "/v1/tenants/Bad%20Id"+op.suffix, bodyFor(op.body, "Bad Id")), http.StatusBadRequest)
		must(e.do(op.method, "/v1/tenants/org%2Fghost"+op.suffix, bodyFor(op.body, "org/ghost")), http.StatusNotFound)
	}
	must(e.do(http.MethodDelete, "/v1/tenants/org%2Fb", nil), http.StatusNoContent)

	// 401 and 500 on every /v1 operation: without the token, and with the registry broken by an
	// operator (its tables renamed) for the 500.
	type operation struct {
		method, path string
		body         any
		contentType  string
	}
	all := []operation{
		{method: http.MethodPost, path: "/v1/tenants/restore?as=org%2Flate", body: aArchive, contentType: httpapi.ArchiveContentType},
		{http.MethodPost, "/v1/tenants", map[string]any{"tenant_id": "org/late", "tier": "shared"}, ""},
		{http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"org/late"}}, ""},
		{http.MethodGet, "/v1/tenants", nil, ""},
		{http.MethodPost, "/v1/placements", map[string]any{"name": "p5", "host": u.Hostname(), "port": port, "database": "postgres"}, ""},
		{http.MethodGet, "/v1/placements", nil, ""},
		{http.MethodGet, "/v1/placements/local", nil, ""},
		{http.MethodDelete, "/v1/placements/p2", nil, ""},
		{http.MethodPost, "/v1/placements/local/drain", nil, ""},
		{http.MethodPost, "/v1/placements/local/disable", nil, ""},
		{http.MethodPost, "/v1/placements/local/activate", nil, ""},
	}
	for _, op := range tenantOps {
		all = append(all, operation{method: op.method, path: "/v1/tenants/org%2Fa" + op.suffix, body: bodyFor(op.body, "org/a")})
	}
	headers := func(op operation, h map[string]string) map[string]string {
		if op.contentType == "" {
			return h
		}
		return archiveAs(h, op.contentType)
	}
	for _, op := range all {
		must(e.doWith(op.method, op.path, op.body, headers(op, noAuth)), http.StatusUnauthorized)
		must(e.doWith(op.method, op.path, op.body, headers(op, badAuth)), http.StatusUnauthorized)
	}
	for _, table := range []string{"tenants", "api_keys", "placements", "tenant_limits", "audit_log", "tenant_jobs"} {
		_, err := e.pool.Exec(ctx, `ALTER TABLE IF EXISTS tenantmem_control.`+table+` RENAME TO `+table+`_broken`)
		require.NoError(t, err)
	}
	for _, op := range all {
		must(e.doWith(op.method, op.path, op.body, headers(op, admin)), http.StatusInternalServerError)
	}
	sc.finish(echoOf(t, e.srv.Config.Handler))
}
