package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

var routerTiers = []registry.Tier{registry.TierShared, registry.TierSchema}

// TestRouterRoutes walks every route's success path, in the shared and in the schema tier.
func TestRouterRoutes(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	for _, tier := range routerTiers {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			tenantID := "acme-" + string(tier) + "/team.1"
			key := e.tenant(tenantID, tier)

			// Add: 201 with a Location, then an upsert on id_at_origin: 200, same id.
			var added memory.DocumentAddResult
			res := e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "Quarterly report", "document_type": "text",
				"content":      "The quarterly report covers revenue growth in the northern region and hiring plans.",
				"id_at_origin": "crm-1", "metadata": map[string]any{"team": "red", "year": 2024},
				"document_date": "2024-03-15",
			}, http.StatusCreated, &added)
			require.NotEmpty(t, added.DocumentID)
			require.Equal(t, "/v1/documents/"+added.DocumentID, res.header.Get("Location"))
			require.Positive(t, added.ChunksCreated)
			require.Equal(t, added.ChunksCreated, added.EmbeddingsCreated)
			require.Contains(t, string(res.body), `"chunks_created"`)
			require.Contains(t, string(res.body), `"embeddings_created"`)

			var upserted memory.DocumentAddResult
			e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "Quarterly report v2", "document_type": "text",
				"content":      "The quarterly report covers revenue growth in the northern region, hiring plans and a new office.",
				"id_at_origin": "crm-1", "metadata": map[string]any{"team": "red", "year": 2024},
				"document_date": "2024-03-15T09:30:00Z",
			}, http.StatusOK, &upserted)
			require.Equal(t, added.DocumentID, upserted.DocumentID)

			// A longer document with small windows has parents and children; another is an email.
			long := strings.Repeat("Pgvector stores embeddings next to the rows they describe. ", 40)
			var chunked memory.DocumentAddResult
			e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "Pgvector notes", "document_type": "markdown", "content": long,
				"chunking": map[string]any{"parent_size": 64, "child_size": 32},
				"metadata": map[string]any{"team": "blue"},
			}, http.StatusCreated, &chunked)
			require.Greater(t, chunked.ChunksCreated, 2)
			var mail memory.DocumentAddResult
			e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "Lunch", "document_type": "email", "id_at_origin": "mail-7",
				"content": "Subject: lunch\n\nShall we meet at noon near the harbour?",
			}, http.StatusCreated, &mail)

			// Get, with and without chunks.
			var doc memory.DocumentWithChunks
			e.ok(t, key, http.MethodGet, "/v1/documents/"+added.DocumentID, nil, http.StatusOK, &doc)
			require.Equal(t, "Quarterly report v2", doc.DocumentName)
			require.Equal(t, "crm-1", *doc.IDAtOrigin)
			require.JSONEq(t, `{"team": "red", "year": 2024}`, string(doc.Metadata))
			require.Equal(t, time.Date(2024, 3, 15, 9, 30, 0, 0, time.UTC), doc.DocumentDate.UTC())
			require.Empty(t, doc.Chunks)
			e.ok(t, key, http.MethodGet, "/v1/documents/"+strings.ToUpper(chunked.DocumentID)+"?include_chunks=true", nil, http.StatusOK, &doc)
			require.Len(t, doc.Chunks, chunked.ChunksCreated)

			// List: filters, order, paging.
			var list memory.DocumentListResult
			e.ok(t, key, http.MethodGet, "/v1/documents", nil, http.StatusOK, &list)
			require.Equal(t, 3, list.Total)
			require.Len(t, list.Documents, 3)
			require.Equal(t, 20, list.Limit)
			e.ok(t, key, http.MethodGet, "/v1/documents?limit=1&offset=1&order_by=document_name&order=asc", nil, http.StatusOK, &list)
			require.Equal(t, 3, list.Total)
			require.Equal(t, 1, list.Limit)
			require.Equal(t, 1, list.Offset)
			require.Len(t, list.Documents, 1)
			require.Equal(t, "Pgvector notes", list.Documents[0].DocumentName)
			e.ok(t, key, http.MethodGet, "/v1/documents?document_type=email", nil, http.StatusOK, &list)
			require.Equal(t, 1, list.Total)
			require.Equal(t, mail.DocumentID, list.Documents[0].DocumentID)
			e.ok(t, key, http.MethodGet, "/v1/documents?id_at_origin=crm-1", nil, http.StatusOK, &list)
			require.Equal(t, 1, list.Total)
			e.ok(t, key, http.MethodGet, "/v1/documents?metadata_filter="+url.QueryEscape(`{"team":"blue"}`), nil, http.StatusOK, &list)
			require.Equal(t, 1, list.Total)
			require.Equal(t, chunked.DocumentID, list.Documents[0].DocumentID)

			// Search in every mode, with and without filters.
			for _, mode := range []string{"vector", "text", "hybrid"} {
				var sr memory.SearchResponse
				e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
					"query_text": "quarterly revenue growth", "search_type": mode, "limit": 5,
				}, http.StatusOK, &sr)
				require.Equal(t, mode, sr.SearchType)
				require.NotEmpty(t, sr.Results, mode)
				require.Equal(t, added.DocumentID, sr.Results[0].DocumentID, mode)
				require.Positive(t, sr.Results[0].Score, mode)
				require.GreaterOrEqual(t, sr.TookMS, 0.0)
			}
			var sr memory.SearchResponse
			res = e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "revenue"}, http.StatusOK, &sr)
			require.Equal(t, "hybrid", sr.SearchType, "the default mode")
			for _, k := range []string{"chunk_id", "document_id", "document_name", "content", "score", "similarity", "text_rank", "rrf_score", "metadata"} {
				require.Contains(t, string(res.body), `"`+k+`"`)
			}
			e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
				"query_text": "embeddings rows", "search_type": "hybrid", "alpha": 0.7,
				"document_types": []string{"markdown"}, "metadata_filter": map[string]any{"team": "blue"},
				"include_parent_context": true, "include_documents": true,
			}, http.StatusOK, &sr)
			require.NotEmpty(t, sr.Results)
			for _, r := range sr.Results {
				require.Equal(t, chunked.DocumentID, r.DocumentID)
				require.Len(t, r.ParentChunks, 1, "a child of a windowed document has its parent")
				require.Equal(t, "markdown", r.DocumentType)
			}
			e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
				"query_text": "report", "search_type": "text", "date_from": "2024-03-15", "date_to": "2024-03-15",
				"id_at_origins": []string{"crm-1", "mail-7"},
			}, http.StatusOK, &sr)
			require.Len(t, sr.Results, 1, "a date bound covers its whole day")
			require.Equal(t, added.DocumentID, sr.Results[0].DocumentID)
			e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
				"query_text": "report", "search_type": "text", "date_to": "2024-03-14", "id_at_origin": "crm-1",
			}, http.StatusOK, &sr)
			require.Empty(t, sr.Results)
			qvec, err := e.embedder.Embed(context.Background(), []string{"lunch at noon near the harbour"})
			require.NoError(t, err)
			e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
				"query_embedding": qvec[0], "search_type": "vector", "limit": 1,
			}, http.StatusOK, &sr)
			require.Len(t, sr.Results, 1)
			require.Equal(t, mail.DocumentID, sr.Results[0].DocumentID)

			// The quick search is hybrid.
			e.ok(t, key, http.MethodGet, "/v1/search?q="+url.QueryEscape("harbour lunch")+"&limit=2", nil, http.StatusOK, &sr)
			require.Equal(t, "hybrid", sr.SearchType)
			require.NotEmpty(t, sr.Results)
			require.LessOrEqual(t, len(sr.Results), 2)
			require.Equal(t, mail.DocumentID, sr.Results[0].DocumentID)

			// History (extension): newest first.
			var hist httpapi.SearchHistoryResponse
			e.ok(t, key, http.MethodGet, "/v1/search/history?limit=2", nil, http.StatusOK, &hist)
			require.Len(t, hist.History, 2)
			require.Equal(t, "harbour lunch", hist.History[0].QueryText)
			require.Equal(t, "hybrid", hist.History[0].SearchType)
			require.Greater(t, hist.History[0].SearchID, hist.History[1].SearchID)

			// Statistics and the embedding queue (extension).
			st := e.stats(t, key)
			require.Equal(t, 3, st.DocumentCount)
			require.Equal(t, added.ChunksCreated+chunked.ChunksCreated+mail.ChunksCreated, st.ChunkCount)
			require.Equal(t, map[string]int{"text": 1, "markdown": 1, "email": 1}, st.DocumentTypeBreakdown)
			require.Positive(t, st.TotalSizeBytes)
			var queue memory.EmbeddingQueueStats
			e.ok(t, key, http.MethodGet, "/v1/embeddings/status", nil, http.StatusOK, &queue)
			require.Equal(t, memory.EmbeddingQueueStats{}, queue)
			var retried httpapi.EmbeddingRetryResponse
			e.ok(t, key, http.MethodPost, "/v1/embeddings/retry", nil, http.StatusOK, &retried)
			require.Zero(t, retried.Queued)

			// Delete one: 204, then 404.
			res = e.ok(t, key, http.MethodDelete, "/v1/documents/"+mail.DocumentID, nil, http.StatusNoContent, nil)
			require.Empty(t, res.body)
			res = e.ok(t, key, http.MethodDelete, "/v1/documents/"+mail.DocumentID, nil, http.StatusNotFound, nil)
			require.Equal(t, httpapi.CodeNotFound, res.problem(t).Code)
			e.ok(t, key, http.MethodGet, "/v1/documents/"+mail.DocumentID, nil, http.StatusNotFound, nil)

			// Delete many: by metadata, then by ids (unknown ids are skipped).
			var del memory.DocumentDeleteManyResult
			e.ok(t, key, http.MethodPost, "/v1/documents/delete", map[string]any{"metadata_filter": map[string]any{"team": "blue"}},
				http.StatusOK, &del)
			require.Equal(t, memory.DocumentDeleteManyResult{DeletedCount: 1, DeletedDocumentIDs: []string{chunked.DocumentID}}, del)
			e.ok(t, key, http.MethodPost, "/v1/documents/delete", map[string]any{
				"document_ids": []string{added.DocumentID, "00000000-0000-4000-8000-000000000000"},
			}, http.StatusOK, &del)
			require.Equal(t, memory.DocumentDeleteManyResult{DeletedCount: 1, DeletedDocumentIDs: []string{added.DocumentID}}, del)
			e.requireNothingStored(t, key, tenantID)
		})
	}
	t.Run("observability", func(t *testing.T) {
		t.Parallel()
		for _, tier := range routerTiers {
			key := e.tenant("watched-"+string(tier), tier)
			e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "n", "document_type": "text", "content": "observed content",
			}, http.StatusCreated, nil)
		}
		e.ok(t, "tm_aaaaaaaaaaaaaaaa_"+strings.Repeat("0", 64), http.MethodGet, "/v1/statistics", nil, http.StatusUnauthorized, nil)

		// The access log names the tenant and the latency; the metrics never do.
		var found bool
		for _, rec := range e.logs.records("http request") {
			if rec["route"] == "/v1/documents" && rec["tenant_id"] == "watched-schema" {
				found = true
				require.EqualValues(t, 201, rec["status"])
				require.Contains(t, rec, "latency_ms")
				require.NotEmpty(t, rec["request_id"])
			}
		}
		require.True(t, found, "access log line with the tenant id")
		// Metrics are not on the tenant-facing port; their own listener serves them.
		require.Equal(t, http.StatusNotFound, e.do(t, "", http.MethodGet, "/metrics", nil).status)
		body := scrape(t, e.reg)
		require.Contains(t, body, `tenantmem_router_requests_total{code="201",method="POST",route="/v1/documents",tier="schema"}`)
		require.Contains(t, body, `tenantmem_router_requests_total{code="201",method="POST",route="/v1/documents",tier="shared"}`)
		require.Contains(t, body, `tenantmem_router_requests_total{code="401",method="GET",route="/v1/statistics",tier="none"}`)
		require.Contains(t, body, `tenantmem_http_requests_total{code="201",method="POST",route="/v1/documents",server="router"}`)
		require.Contains(t, body, `tenantmem_router_cache_entries{cache="handles"}`)
		require.Contains(t, body, `tenantmem_router_cache_hits_total{cache="keys"}`)
		require.Contains(t, body, `tenantmem_router_cache_purges_total`)
		require.NotContains(t, body, "watched")
		require.NotContains(t, body, "acme")
	})
}

// TestRouterHealthAndReadiness checks the probes, which need no key.
func TestRouterHealthAndReadiness(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	require.Equal(t, http.StatusOK, e.do(t, "", http.MethodGet, "/healthz", nil).status)
	res := e.do(t, "", http.MethodGet, "/readyz", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))

	notReady := newRouterEnvWith(t, routerOptions{ready: func(context.Context) error {
		return fmt.Errorf("check: %w", registry.ErrNotFound)
	}})
	res = notReady.do(t, "", http.MethodGet, "/readyz", nil)
	require.Equal(t, http.StatusServiceUnavailable, res.status)
	require.NotEmpty(t, res.header.Get("Retry-After"))
}

// TestRouterAuthentication: missing, malformed, unknown, wrong, revoked and other tenants' keys
// get 401 with WWW-Authenticate on every route, and nothing is written.
func TestRouterAuthentication(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	ctx := context.Background()
	keyA := e.tenant("auth-a", registry.TierShared)
	keyB := e.tenant("auth-b", registry.TierSchema)
	revoked, err := e.prov.IssueKey(ctx, "auth-a")
	require.NoError(t, err)
	require.NoError(t, e.prov.RevokeKey(ctx, "auth-a", revoked.KeyID))
	idA, secretA, err := registry.ParseKey(keyA)
	require.NoError(t, err)
	idB, secretB, err := registry.ParseKey(keyB)
	require.NoError(t, err)

	docID := "00000000-0000-4000-8000-000000000000"
	routes := []struct{ method, path, body string }{
		{http.MethodPost, "/v1/documents", `{"document_name": "x", "document_type": "text", "content": "intruder"}`},
		{http.MethodGet, "/v1/documents", ""},
		{http.MethodGet, "/v1/documents/" + docID, ""},
		{http.MethodDelete, "/v1/documents/" + docID, ""},
		{http.MethodDelete, "/v1/documents/..%2F..", ""},
		{http.MethodPost, "/v1/documents/delete", `{"metadata_filter": {"a": 1}}`},
		{http.MethodPost, "/v1/search", `{"query_text": "x"}`},
		{http.MethodGet, "/v1/search?q=x", ""},
		{http.MethodGet, "/v1/search/history", ""},
		{http.MethodGet, "/v1/statistics", ""},
		{http.MethodGet, "/v1/embeddings/status", ""},
		{http.MethodPost, "/v1/embeddings/retry", ""},
	}
	for _, tc := range []struct {
		given  string
		header map[string]string
	}{
		{"no header", nil},
		{"empty header", map[string]string{"Authorization": ""}},
		{"basic scheme", map[string]string{"Authorization": "Basic " + keyA}},
		{"bare key", map[string]string{"Authorization": keyA}},
		{"bearer without key", map[string]string{"Authorization": "Bearer "}},
		{"extra space", map[string]string{"Authorization": "Bearer  " + keyA}},
		{"key with suffix", map[string]string{"Authorization": "Bearer " + keyA + "0"}},
		{"truncated key", map[string]string{"Authorization": "Bearer " + keyA[:len(keyA)-1]}},
		{"garbage", map[string]string{"Authorization": "Bearer ' OR 1=1 --"}},
		{"unknown key id", map[string]string{"Authorization": "Bearer tm_zzzzzzzzzzzzzzzz_" + secretA}},
		{"A's key id with B's secret", map[string]string{"Authorization": "Bearer tm_" + idA + "_" + secretB}},
		{"B's key id with A's secret", map[string]string{"Authorization": "Bearer tm_" + idB + "_" + secretA}},
		{"revoked key", map[string]string{"Authorization": "Bearer " + revoked.Key}},
		{"key in a query parameter", nil},
	} {
		for _, r := range routes {
			var body any
			if r.body != "" {
				body = r.body
			}
			path := r.path
			if tc.given == "key in a query parameter" {
				sep := "?"
				if strings.Contains(path, "?") {
					sep = "&"
				}
				path += sep + "api_key=" + url.QueryEscape(keyA)
			}
			res := e.doWith(t, r.method, path, body, tc.header)
			require.Equal(t, http.StatusUnauthorized, res.status, "%s: %s %s: %s", tc.given, r.method, r.path, res.body)
			require.Equal(t, httpapi.CodeUnauthorized, res.problem(t).Code)
			require.Equal(t, `Bearer realm="tenantmem"`, res.header.Get("WWW-Authenticate"))
			require.NotContains(t, string(res.body), secretA)
		}
	}
	// Two Authorization headers, one of them valid, are refused too.
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/statistics", nil)
	require.NoError(t, err)
	req.Header.Add("Authorization", "Bearer "+keyA)
	req.Header.Add("Authorization", "Bearer "+keyB)
	res, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)

	// The scheme is case-insensitive; the valid keys still work and nothing was written.
	res2 := e.doWith(t, http.MethodGet, "/v1/statistics", nil, map[string]string{"Authorization": "bearer " + keyA})
	require.Equal(t, http.StatusOK, res2.status, string(res2.body))
	e.requireNothingStored(t, keyA, "auth-a")
	e.requireNothingStored(t, keyB, "auth-b")
}

// TestRouterFollowsTheRegistry: a suspended tenant gets 403 within a second of the suspension
// (through LISTEN/NOTIFY, with its handle cached), a resumed one is served again, a revoked key
// and a deleted tenant's key get 401.
func TestRouterFollowsTheRegistry(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	ctx := context.Background()
	for _, tier := range routerTiers {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			id := "lifecycle-" + string(tier)
			key := e.tenant(id, tier)
			var added memory.DocumentAddResult
			e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "n", "document_type": "text", "content": "kept while suspended",
			}, http.StatusCreated, &added)
			e.stats(t, key) // the handle is cached now

			start := time.Now()
			_, err := e.prov.SuspendTenant(ctx, id)
			require.NoError(t, err)
			var res response
			waitUntil(t, 10*time.Second, "403 after suspension", func() bool {
				res = e.do(t, key, http.MethodGet, "/v1/statistics", nil)
				return res.status == http.StatusForbidden
			})
			t.Logf("%s tier: 403 %s after SuspendTenant returned", tier, time.Since(start))
			require.Equal(t, httpapi.CodeForbidden, res.problem(t).Code)
			for _, r := range []struct{ method, path string }{
				{http.MethodGet, "/v1/documents/" + added.DocumentID}, {http.MethodPost, "/v1/search"}, {http.MethodGet, "/v1/documents"},
			} {
				require.Equal(t, http.StatusForbidden, e.do(t, key, r.method, r.path, map[string]string{"query_text": "x"}).status)
			}
			res = e.do(t, key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "n", "document_type": "text", "content": "blocked"})
			require.Equal(t, http.StatusForbidden, res.status)

			_, err = e.prov.ResumeTenant(ctx, id)
			require.NoError(t, err)
			waitUntil(t, 10*time.Second, "200 after resume", func() bool {
				return e.do(t, key, http.MethodGet, "/v1/statistics", nil).status == http.StatusOK
			})
			require.Equal(t, 1, e.stats(t, key).DocumentCount, "nothing was written while suspended")

			// A revoked key stops at once; another key of the tenant keeps working.
			other, err := e.prov.IssueKey(ctx, id)
			require.NoError(t, err)
			keyID, _, err := registry.ParseKey(key)
			require.NoError(t, err)
			require.NoError(t, e.prov.RevokeKey(ctx, id, keyID))
			waitUntil(t, 10*time.Second, "401 after revocation", func() bool {
				return e.do(t, key, http.MethodGet, "/v1/statistics", nil).status == http.StatusUnauthorized
			})
			require.Equal(t, 1, e.stats(t, other.Key).DocumentCount)

			// A deleted tenant's key gets 401.
			require.NoError(t, e.prov.DeleteTenant(ctx, id))
			waitUntil(t, 10*time.Second, "401 after deletion", func() bool {
				return e.do(t, other.Key, http.MethodGet, "/v1/statistics", nil).status == http.StatusUnauthorized
			})
			res = e.do(t, other.Key, http.MethodGet, "/v1/documents/"+added.DocumentID, nil)
			require.Equal(t, http.StatusUnauthorized, res.status)
			require.Equal(t, httpapi.CodeUnauthorized, res.problem(t).Code)
		})
	}
}

// TestRouterRejectsBadBodies: invalid JSON, wrong types, unknown fields (a tenant or owner id
// among them) and bad values get 400 naming the field, and nothing is written.
func TestRouterRejectsBadBodies(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	victimKey := e.tenant("victim", registry.TierShared)
	t.Run("tiers", func(t *testing.T) { // returns when its parallel subtests are done
		for _, tier := range routerTiers {
			t.Run(string(tier), func(t *testing.T) {
				t.Parallel()
				id := "bodies-" + string(tier)
				key := e.tenant(id, tier)
				valid := `"document_name": "n", "document_type": "text", "content": "c"`
				for _, tc := range []struct {
					given  string
					path   string
					body   string
					field  string
					status int
				}{
					{"empty body", "/v1/documents", "", "body", 400},
					{"invalid JSON", "/v1/documents", `{"document_name": "n",`, "body", 400},
					{"syntax error", "/v1/documents", `{"document_name" "n"}`, "body", 400},
					{"not an object", "/v1/documents", `["document_name"]`, "body", 400},
					{"a string", "/v1/documents", `"hello"`, "body", 400},
					{"trailing data", "/v1/documents", `{` + valid + `} {}`, "body", 400},
					{"wrong type: name", "/v1/documents", `{"document_name": 7, "document_type": "text", "content": "c"}`, "document_name", 400},
					{"wrong type: content", "/v1/documents", `{"document_name": "n", "document_type": "text", "content": ["c"]}`, "content", 400},
					{"wrong type: metadata", "/v1/documents", `{` + valid + `, "metadata": "x"}`, "metadata", 400},
					{"metadata array", "/v1/documents", `{` + valid + `, "metadata": [1]}`, "metadata", 400},
					{"wrong type: date", "/v1/documents", `{` + valid + `, "document_date": 20240101}`, "document_date", 400},
					{"bad date", "/v1/documents", `{` + valid + `, "document_date": "yesterday"}`, "document_date", 400},
					{"wrong type: chunking", "/v1/documents", `{` + valid + `, "chunking": {"parent_size": "big"}}`, "chunking.parent_size", 400},
					{"bad chunking", "/v1/documents", `{` + valid + `, "chunking": {"parent_size": 1}}`, "chunking.parent_size", 400},
					{"unknown chunking field", "/v1/documents", `{` + valid + `, "chunking": {"size": 100}}`, "size", 400},
					{"tenant_id", "/v1/documents", `{` + valid + `, "tenant_id": "victim"}`, "tenant_id", 400},
					{"owner_id", "/v1/documents", `{` + valid + `, "owner_id": "victim"}`, "owner_id", 400},
					{"schema", "/v1/documents", `{` + valid + `, "schema": "tenantmem_shared"}`, "schema", 400},
					{"unknown field", "/v1/documents", `{` + valid + `, "title": "t"}`, "title", 400},
					{"missing name", "/v1/documents", `{"document_type": "text", "content": "c"}`, "document_name", 400},
					{"blank content", "/v1/documents", `{"document_name": "n", "document_type": "text", "content": "  "}`, "content", 400},
					{"unknown type", "/v1/documents", `{"document_name": "n", "document_type": "novel", "content": "c"}`, "document_type", 400},
					{"NUL in content", "/v1/documents", `{"document_name": "n", "document_type": "text", "content": "a\u0000b"}`, "content", 400},
					{"long name", "/v1/documents", `{"document_name": "` + strings.Repeat("n", 501) + `", "document_type": "text", "content": "c"}`, "document_name", 413},
					{"search: tenant_id", "/v1/search", `{"query_text": "x", "tenant_id": "victim"}`, "tenant_id", 400},
					{"search: owner_id", "/v1/search", `{"query_text": "x", "owner_id": "victim"}`, "owner_id", 400},
					{"search: wrong type", "/v1/search", `{"query_text": 1}`, "query_text", 400},
					{"search: limit type", "/v1/search", `{"query_text": "x", "limit": "10"}`, "limit", 400},
					{"search: limit range", "/v1/search", `{"query_text": "x", "limit": 1000}`, "limit", 400},
					{"search: mode", "/v1/search", `{"query_text": "x", "search_type": "fuzzy"}`, "search_type", 400},
					{"search: alpha", "/v1/search", `{"query_text": "x", "alpha": 2}`, "alpha", 400},
					{"search: date", "/v1/search", `{"query_text": "x", "date_from": "soon"}`, "date_from", 400},
					{"search: embedding", "/v1/search", `{"search_type": "vector", "query_embedding": [1, 2]}`, "query_embedding", 400},
					{"search: empty", "/v1/search", `{"query_text": " "}`, "query_text", 400},
					{"delete: neither", "/v1/documents/delete", `{}`, "document_ids", 400},
					{"delete: bad id", "/v1/documents/delete", `{"document_ids": ["../x"]}`, "document_ids[0]", 400},
					{"delete: empty filter", "/v1/documents/delete", `{"metadata_filter": {}}`, "metadata_filter", 400},
					{"delete: tenant_id", "/v1/documents/delete", `{"metadata_filter": {"a": 1}, "tenant_id": "victim"}`, "tenant_id", 400},
				} {
					var body any
					if tc.body != "" {
						body = tc.body
					}
					res := e.do(t, key, http.MethodPost, tc.path, body)
					require.Equal(t, tc.status, res.status, "%s: %s", tc.given, res.body)
					p := res.problem(t)
					require.Equal(t, tc.field, p.Field, "%s: %s", tc.given, res.body)
					require.True(t, strings.HasPrefix(p.Message, tc.field+":"), "%s: the message names the field: %s", tc.given, p.Message)
				}
				// Query strings: a tenant, owner or schema parameter, unknown and repeated parameters,
				// and malformed values.
				for _, tc := range []struct{ given, method, path, field string }{
					{"tenant_id on a list", http.MethodGet, "/v1/documents?tenant_id=victim", "tenant_id"},
					{"owner_id on statistics", http.MethodGet, "/v1/statistics?owner_id=victim", "owner_id"},
					{"schema on a search", http.MethodPost, "/v1/search?schema=tenantmem_shared", "schema"},
					{"tenant_id on an add", http.MethodPost, "/v1/documents?tenant_id=victim", "tenant_id"},
					{"unknown parameter", http.MethodGet, "/v1/documents?limt=5", "limt"},
					{"repeated parameter", http.MethodGet, "/v1/documents?limit=5&limit=6", "limit"},
					{"limit not a number", http.MethodGet, "/v1/documents?limit=ten", "limit"},
					{"limit out of range", http.MethodGet, "/v1/documents?limit=0", "limit"},
					{"negative offset", http.MethodGet, "/v1/documents?offset=-1", "offset"},
					{"order_by", http.MethodGet, "/v1/documents?order_by=owner_id", "order_by"},
					{"order", http.MethodGet, "/v1/documents?order=sideways", "order"},
					{"metadata_filter", http.MethodGet, "/v1/documents?metadata_filter=%5B%5D", "metadata_filter"},
					{"include_chunks", http.MethodGet, "/v1/documents/00000000-0000-4000-8000-000000000000?include_chunks=maybe", "include_chunks"},
					{"empty q", http.MethodGet, "/v1/search?q=", "q"},
					{"long q", http.MethodGet, "/v1/search?q=" + strings.Repeat("q", 1001), "q"},
					{"history limit", http.MethodGet, "/v1/search/history?limit=x", "limit"},
					{"semicolon separator", http.MethodGet, "/v1/documents?limit=1;offset=2", "query"},
				} {
					res := e.do(t, key, tc.method, tc.path, `{"query_text": "x", "document_name": "n", "document_type": "text", "content": "c"}`)
					require.Contains(t, []int{400, 413}, res.status, "%s: %s", tc.given, res.body)
					require.Equal(t, tc.field, res.problem(t).Field, "%s: %s", tc.given, res.body)
				}
				e.requireNothingStored(t, key, id)
			})
		}
	})
	e.requireNothingStored(t, victimKey, "victim")
}

// TestRouterBodyLimit: bodies over the limit get 413 (announced or streamed), and so does content
// over the engine's 10 MB within the limit; nothing is written.
func TestRouterBodyLimit(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("big", registry.TierSchema)
	over := `{"document_name": "n", "document_type": "text", "content": "` + strings.Repeat("a", int(httpapi.DefaultRouterBodyLimit)) + `"}`

	res := e.do(t, key, http.MethodPost, "/v1/documents", over)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, string(res.body))
	require.Equal(t, httpapi.CodePayloadTooLarge, res.problem(t).Code)

	// Without a Content-Length the limit bites while reading.
	res = e.do(t, key, http.MethodPost, "/v1/documents", struct{ *strings.Reader }{strings.NewReader(over)})
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status, string(res.body))

	// Within the body limit, content over 10 MB is refused by the engine, naming the field.
	content := strings.Repeat("b", memory.DefaultMaxContentBytes+1)
	res = e.do(t, key, http.MethodPost, "/v1/documents", map[string]string{"document_name": "n", "document_type": "text", "content": content})
	require.Equal(t, http.StatusRequestEntityTooLarge, res.status)
	p := res.problem(t)
	require.Equal(t, "content", p.Field)
	require.Contains(t, p.Message, "content: at most")

	e.requireNothingStored(t, key, "big")

	// Exactly 10 MB is accepted.
	content = strings.Repeat("word ", memory.DefaultMaxContentBytes/5)
	res = e.do(t, key, http.MethodPost, "/v1/documents", map[string]string{"document_name": "n", "document_type": "text", "content": content})
	require.Equal(t, http.StatusCreated, res.status, "%.300s", res.body)
	require.EqualValues(t, memory.DefaultMaxContentBytes, e.stats(t, key).TotalSizeBytes)
}

// sqlStrings are attempts at SQL injection; every one must be stored and searched as text.
var sqlStrings = []string{
	`'; DROP TABLE documents; --`,
	`" OR 1=1 --`,
	`x'); DELETE FROM chunks WHERE ('1'='1`,
	`$1 $$ ; SELECT set_config('tenantmem.owner_id', 'victim', false); $$`,
	`\'; TRUNCATE tenantmem_control.tenants CASCADE; --`,
	`Robert'); SET ROLE tenantmem_owner; --`,
}

// TestRouterStoresSQLLiterally puts SQL into every string field and checks it is stored, listed,
// filtered and searched literally, and that nothing else changed.
func TestRouterStoresSQLLiterally(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	victimKey := e.tenant("victim", registry.TierShared)
	e.ok(t, victimKey, http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "victim doc", "document_type": "text", "content": "the victim's own words",
	}, http.StatusCreated, nil)
	t.Run("tiers", func(t *testing.T) { // returns when its parallel subtests are done
		for _, tier := range routerTiers {
			t.Run(string(tier), func(t *testing.T) {
				t.Parallel()
				key := e.tenant("sql-"+string(tier), tier)
				ids := map[string]string{}
				for i, s := range sqlStrings {
					var added memory.DocumentAddResult
					e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
						"document_name": s, "document_type": "text", "content": fmt.Sprintf("marker%d %s", i, s),
						"id_at_origin": s, "metadata": map[string]any{s: s},
					}, http.StatusCreated, &added)
					ids[s] = added.DocumentID
				}
				for i, s := range sqlStrings {
					var doc memory.DocumentWithChunks
					e.ok(t, key, http.MethodGet, "/v1/documents/"+ids[s]+"?include_chunks=true", nil, http.StatusOK, &doc)
					require.Equal(t, s, doc.DocumentName)
					require.Equal(t, s, *doc.IDAtOrigin)
					var md map[string]string
					require.NoError(t, json.Unmarshal(doc.Metadata, &md))
					require.Equal(t, map[string]string{s: s}, md)
					require.Equal(t, fmt.Sprintf("marker%d %s", i, s), doc.Chunks[0].Content)

					var list memory.DocumentListResult
					e.ok(t, key, http.MethodGet, "/v1/documents?id_at_origin="+url.QueryEscape(s), nil, http.StatusOK, &list)
					require.Equal(t, 1, list.Total, s)
					mf, err := json.Marshal(map[string]string{s: s})
					require.NoError(t, err)
					e.ok(t, key, http.MethodGet, "/v1/documents?metadata_filter="+url.QueryEscape(string(mf)), nil, http.StatusOK, &list)
					require.Equal(t, 1, list.Total, s)

					for _, mode := range []string{"vector", "text", "hybrid"} {
						var sr memory.SearchResponse
						e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{
							"query_text": s, "search_type": mode, "id_at_origin": s, "id_at_origins": []string{s},
							"metadata_filter": map[string]string{s: s}, "include_documents": true,
						}, http.StatusOK, &sr)
						for _, r := range sr.Results {
							require.Equal(t, ids[s], r.DocumentID, "%s %q", mode, s)
						}
					}
					var sr memory.SearchResponse
					e.ok(t, key, http.MethodGet, "/v1/search?q="+url.QueryEscape(fmt.Sprintf("marker%d", i)), nil, http.StatusOK, &sr)
					require.NotEmpty(t, sr.Results, s)
					require.Equal(t, ids[s], sr.Results[0].DocumentID, s)

					// In enumerated fields SQL is just an invalid value.
					for _, path := range []string{"/v1/documents?order_by=", "/v1/documents?order=", "/v1/documents?document_type="} {
						res := e.do(t, key, http.MethodGet, path+url.QueryEscape(s), nil)
						require.Equal(t, http.StatusBadRequest, res.status, "%s%s", path, s)
					}
					res := e.do(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "x", "search_type": s})
					require.Equal(t, http.StatusBadRequest, res.status)
					res = e.do(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "x", "document_types": []string{s}})
					require.Equal(t, http.StatusBadRequest, res.status)
					res = e.do(t, key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "n", "document_type": s, "content": "c"})
					require.Equal(t, http.StatusBadRequest, res.status)
				}
				st := e.stats(t, key)
				require.Equal(t, len(sqlStrings), st.DocumentCount)
				require.Equal(t, len(sqlStrings), st.ChunkCount)
			})
		}
	})
	// The victim, the registry and the tables are intact.
	st := e.stats(t, victimKey)
	require.Equal(t, 1, st.DocumentCount)
	tenants, err := e.prov.ListTenants(context.Background(), registry.TenantListParams{})
	require.NoError(t, err)
	require.Len(t, tenants, 3)
}

// TestRouterForeignDocumentIsNotFound: another tenant's document id answers exactly like a
// missing id, in GET and DELETE, and the document is untouched.
func TestRouterForeignDocumentIsNotFound(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	for _, pair := range []struct{ owner, other registry.Tier }{
		{registry.TierShared, registry.TierShared}, {registry.TierSchema, registry.TierSchema},
		{registry.TierShared, registry.TierSchema}, {registry.TierSchema, registry.TierShared},
	} {
		name := string(pair.owner) + "-" + string(pair.other)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ownerKey := e.tenant("owner-"+name, pair.owner)
			otherKey := e.tenant("other-"+name, pair.other)
			var added memory.DocumentAddResult
			e.ok(t, ownerKey, http.MethodPost, "/v1/documents", map[string]any{
				"document_name": "private", "document_type": "text", "content": "owner's private words",
			}, http.StatusCreated, &added)
			missing := "7b0e5a3c-1111-4222-8333-944445555666"

			for _, r := range []struct{ method, suffix string }{
				{http.MethodGet, ""}, {http.MethodGet, "?include_chunks=true"}, {http.MethodDelete, ""},
			} {
				foreign := e.do(t, otherKey, r.method, "/v1/documents/"+added.DocumentID+r.suffix, nil)
				absent := e.do(t, otherKey, r.method, "/v1/documents/"+missing+r.suffix, nil)
				require.Equal(t, http.StatusNotFound, foreign.status, string(foreign.body))
				require.Equal(t, absent.status, foreign.status)
				require.Equal(t, string(absent.body), string(foreign.body), "same body, byte for byte")
				require.Equal(t, absent.header.Get("Content-Type"), foreign.header.Get("Content-Type"))
				require.Equal(t, absent.header.Get("Content-Length"), foreign.header.Get("Content-Length"))
				require.JSONEq(t, `{"error": {"code": "not_found", "message": "document not found"}}`, string(foreign.body))
			}
			var del memory.DocumentDeleteManyResult
			e.ok(t, otherKey, http.MethodPost, "/v1/documents/delete", map[string]any{"document_ids": []string{added.DocumentID}},
				http.StatusOK, &del)
			require.Zero(t, del.DeletedCount)

			var doc memory.DocumentWithChunks
			e.ok(t, ownerKey, http.MethodGet, "/v1/documents/"+added.DocumentID, nil, http.StatusOK, &doc)
			require.Equal(t, "private", doc.DocumentName)
			require.Zero(t, e.stats(t, otherKey).DocumentCount)
		})
	}
}

// TestRouterBadDocumentIDs: path traversal and odd characters in document ids get 400 naming
// document_id, never a database error, on GET and DELETE.
func TestRouterBadDocumentIDs(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("paths", registry.TierSchema)
	var added memory.DocumentAddResult
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "n", "document_type": "text", "content": "still here",
	}, http.StatusCreated, &added)
	for _, id := range []string{
		"..", "..%2F..%2Fstatistics", "%2E%2E", "..%2f", "../../etc/passwd", "a/b", added.DocumentID + "%2F..",
		added.DocumentID + "/chunks", "not-a-uuid", "1", "%27%20OR%201%3D1%20--", "1%3B%20DROP%20TABLE%20documents",
		"%00", added.DocumentID + "%00", "%E2%80%AE" + added.DocumentID[3:], "%C3%A9" + added.DocumentID[2:],
		strings.Repeat("a", 4000), "00000000-0000-0000-0000-00000000000g", "{" + added.DocumentID + "}",
		"%20" + added.DocumentID, added.DocumentID[:35],
	} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			res := e.do(t, key, method, "/v1/documents/"+id, nil)
			require.Equal(t, http.StatusBadRequest, res.status, "%s %q: %s", method, id, res.body)
			p := res.problem(t)
			require.Equal(t, "document_id", p.Field)
			require.NotContains(t, p.Message, "SQLSTATE")
		}
	}
	// Nothing was deleted; the logs hold no server error.
	require.Equal(t, 1, e.stats(t, key).DocumentCount)
	for _, rec := range e.logs.records("request failed") {
		t.Errorf("server error: %v", rec)
	}
}

// TestRouterEmbeddingFailures: a provider failure at ingest queues the chunks (reported to
// OnIngest and by /v1/embeddings/status); at query time a vector search gets 503 with
// Retry-After, while a hybrid search degrades to text.
func TestRouterEmbeddingFailures(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("flaky", registry.TierShared)
	e.embedder.failWith(errProviderDown)
	var added memory.DocumentAddResult
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{
		"document_name": "n", "document_type": "text", "content": "queued for the worker",
	}, http.StatusCreated, &added)
	require.Positive(t, added.EmbeddingsPending)
	require.Equal(t, []ingestEvent{{tenantID: "flaky", pending: added.EmbeddingsPending}}, e.ingested())
	var queue memory.EmbeddingQueueStats
	e.ok(t, key, http.MethodGet, "/v1/embeddings/status", nil, http.StatusOK, &queue)
	require.Equal(t, added.EmbeddingsPending, queue.Pending)

	res := e.do(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "worker", "search_type": "vector"})
	require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
	require.Equal(t, "5", res.header.Get("Retry-After"))
	require.Equal(t, httpapi.CodeUnavailable, res.problem(t).Code)
	var sr memory.SearchResponse
	e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "worker"}, http.StatusOK, &sr)
	require.True(t, sr.Degraded)
	require.NotEmpty(t, sr.Results)

	e.embedder.failWith(fmt.Errorf("%w: 401 invalid api key", embed.ErrProvider))
	res = e.do(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "worker", "search_type": "vector"})
	require.Equal(t, http.StatusServiceUnavailable, res.status, string(res.body))
	require.Equal(t, "60", res.header.Get("Retry-After"))
	require.NotContains(t, string(res.body), "invalid api key", "provider details stay in the log")

	e.embedder.failWith(nil)
	e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "worker", "search_type": "vector"}, http.StatusOK, nil)
}
