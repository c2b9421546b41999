package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// vectorJSON is a JSON array of dim numbers with one hot position.
func vectorJSON(dim, hot int) string {
	parts := make([]string, dim)
	for i := range parts {
		parts[i] = "0"
	}
	parts[hot] = "1"
	return "[" + strings.Join(parts, ",") + "]"
}

func TestAddDocumentWithClientVectors(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("vec", registry.TierShared)
	body := `{"document_name": "pre", "document_type": "text", "id_at_origin": "p-1", "chunks": [
		{"content": "alpha bravo", "metadata": {"page": 1}, "embedding": ` + vectorJSON(routerTestDim, 0) + `},
		{"content": "charlie delta", "embedding": ` + vectorJSON(routerTestDim, 1) + `},
		{"content": "echo foxtrot"}]}`
	var res memory.DocumentAddResult
	e.ok(t, key, http.MethodPost, "/v1/documents", body, http.StatusCreated, &res)
	require.Equal(t, 3, res.ChunksCreated)
	require.Equal(t, 3, res.EmbeddingsCreated, "two given, one embedded by the router")

	// A query vector equal to chunk 1's finds it first, at similarity 1.
	var out struct {
		Results []memory.SearchResult `json:"results"`
	}
	e.ok(t, key, http.MethodPost, "/v1/search", `{"search_type": "vector", "query_embedding": `+vectorJSON(routerTestDim, 1)+`}`,
		http.StatusOK, &out)
	require.Equal(t, "charlie delta", out.Results[0].Content)
	require.InDelta(t, 1.0, *out.Results[0].Similarity, 1e-9)
	// And the text index has them.
	e.ok(t, key, http.MethodPost, "/v1/search", `{"search_type": "text", "query_text": "foxtrot"}`, http.StatusOK, &out)
	require.Equal(t, "echo foxtrot", out.Results[0].Content)

	for _, tc := range []struct {
		name, chunks, field, msg string
	}{
		{"short", `[{"content": "a", "embedding": [1, 0]}]`, "chunks[0].embedding", "has 2 values; this deployment's embeddings have 64"},
		{"nan", `[{"content": "a"}, {"content": "b", "embedding": [1, NaN]}]`, "chunks[1].embedding[1]", "NaN"},
		{"inf", `[{"content": "a", "embedding": [Infinity]}]`, "chunks[0].embedding[0]", "Infinity"},
		{"overflow", `[{"content": "a", "embedding": [1, 2, 1e40]}]`, "chunks[0].embedding[2]", "out of range"},
		{"zero", `[{"content": "a", "embedding": ` + strings.Replace(vectorJSON(routerTestDim, 0), "1", "0", 1) + `}]`, "chunks[0].embedding", "all zeros"},
		{"both", `[{"content": "a"}], "content": "b"`, "chunks", "not both"},
		{"neither", `null`, "content", "give the content"},
		{"owner", `[{"content": "a", "owner_id": "other"}]`, "owner_id", "unknown field"},
	} {
		res := e.do(t, key, http.MethodPost, "/v1/documents", `{"document_name": "bad", "document_type": "text", "chunks": `+tc.chunks+`}`)
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", tc.name, res.body)
		p := res.problem(t)
		require.Equal(t, tc.field, p.Field, tc.name)
		require.Contains(t, p.Message, tc.msg, tc.name)
	}
	require.Equal(t, 1, e.stats(t, key).DocumentCount, "nothing of the refused documents was stored")
}

func TestBulkImportRoute(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("bulk", registry.TierSchema)
	other := e.tenant("other", registry.TierSchema)
	var lines []string
	for i := range 30 {
		if i%2 == 0 {
			lines = append(lines, fmt.Sprintf(`{"document_name": "doc %d", "document_type": "text", "id_at_origin": "d-%d", "content": "plain text number %d"}`, i, i, i))
		} else {
			lines = append(lines, fmt.Sprintf(`{"document_name": "doc %d", "document_type": "text", "id_at_origin": "d-%d", "chunks": [{"content": "chunk of %d", "embedding": %s}]}`,
				i, i, i, vectorJSON(routerTestDim, i)))
		}
	}
	lines = append(lines, "", `{"document_name": "bad", "document_type": "text", "chunks": [{"content": "x", "embedding": [NaN]}]}`,
		`{"document_name": "", "document_type": "text", "content": "x"}`, `not json`, `{"document_name": "x", "document_type": "text", "content": "y", "tenant_id": "other"}`)
	body := strings.Join(lines, "\n") + "\n"
	var res httpapi.ImportResponse
	e.ok(t, key, http.MethodPost, "/v1/documents/import", body, http.StatusOK, &res)
	require.Equal(t, 30, res.Documents)
	require.Equal(t, 30, res.Created)
	require.Equal(t, 4, res.FailedCount)
	require.Equal(t, []int{32, 33, 34, 35}, []int{res.Failed[0].Line, res.Failed[1].Line, res.Failed[2].Line, res.Failed[3].Line})
	require.Equal(t, "chunks[0].embedding[0]", res.Failed[0].Error.Field)
	require.Equal(t, "document_name", res.Failed[1].Error.Field)
	require.Equal(t, "body", res.Failed[2].Error.Field)
	require.Equal(t, "tenant_id", res.Failed[3].Error.Field)
	require.Equal(t, 30, e.stats(t, key).DocumentCount)
	require.Zero(t, e.stats(t, other).DocumentCount, "the tenant is the key's, whatever a line says")

	// Again: the same id_at_origin replaces, nothing doubles.
	e.ok(t, key, http.MethodPost, "/v1/documents/import", strings.Join(lines[:30], "\n"), http.StatusOK, &res)
	require.Equal(t, 30, res.Updated)
	require.Equal(t, 30, e.stats(t, key).DocumentCount)

	// The tenant is suspended in the middle of an import: it stops there and says where.
	pr, pw := io.Pipe()
	done := make(chan response, 1)
	go func() { done <- e.do(t, key, http.MethodPost, "/v1/documents/import", pr) }()
	for _, l := range lines[:5] {
		_, err := io.WriteString(pw, l+"\n")
		require.NoError(t, err)
	}
	waitUntil(t, 30*time.Second, "the first lines stored", func() bool {
		var n int
		_ = e.admin.QueryRow(context.Background(), `SELECT count(*) FROM tenant_bulk.documents WHERE updated_at > now() - interval '1 minute' AND document_name = 'doc 4'
			AND updated_at > (SELECT max(updated_at) FROM tenant_bulk.documents WHERE document_name = 'doc 29')`).Scan(&n)
		return n == 1
	})
	_, err := e.prov.SuspendTenant(context.Background(), "bulk")
	require.NoError(t, err)
	_, err = io.WriteString(pw, strings.Join(lines[5:10], "\n")+"\n")
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	r := <-done
	require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusForbidden}, r.status, string(r.body))
	p := r.problem(t)
	require.Contains(t, p.Message, "import stopped at line 6 (5 documents stored before it)")
}

// TestBulkImportStopsAtTheQuota: a bulk import that reaches the tenant's quota stops there with
// 413 quota_exceeded, saying how many lines were stored, instead of refusing every later line
// one by one; the documents stored are whole, and a refused line stored nothing.
func TestBulkImportStopsAtTheQuota(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("capped", registry.TierShared)
	three := int64(3)
	_, err := e.prov.SetTenantLimits(context.Background(), "capped", registry.TenantLimits{MaxDocuments: &three})
	require.NoError(t, err)
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"document_name": "doc %d", "document_type": "text", "id_at_origin": "d-%d", "content": "text %d"}`, i, i, i))
	}
	r := e.do(t, key, http.MethodPost, "/v1/documents/import", strings.Join(lines, "\n"))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status, string(r.body))
	p := r.problem(t)
	require.Equal(t, httpapi.CodeQuotaExceeded, p.Code)
	require.Contains(t, p.Message, "import stopped at line 4 (3 documents stored before it)")
	require.Contains(t, p.Message, "documents: the tenant's quota of 3")
	st := e.stats(t, key)
	require.Equal(t, 3, st.DocumentCount)
	require.Equal(t, 3, st.ChunkCount)
}

// TestBulkImportStaysInItsTenant: an import writes only into the key's tenant in every tier: a
// line reusing another tenant's id_at_origin creates a document of the importer's own (the other
// tenant's document keeps its content, its chunks and its search results), and nothing of the
// import can be read, counted or searched by the other tenant, nor by a tenant of another tier.
func TestBulkImportStaysInItsTenant(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		t.Run(string(tier), func(t *testing.T) {
			victim := e.tenant("imp-victim-"+string(tier), tier)
			importer := e.tenant("imp-importer-"+string(tier), tier)
			bystander := e.tenant("imp-bystander-"+string(tier), registry.TierShared)
			var doc memory.DocumentAddResult
			e.ok(t, victim, http.MethodPost, "/v1/documents", `{"document_name": "secret", "document_type": "text",
				"id_at_origin": "shared-id", "content": "victim canary zebraphone"}`, http.StatusCreated, &doc)

			lines := []string{
				`{"document_name": "mine", "document_type": "text", "id_at_origin": "shared-id", "content": "importer text quokkaline"}`,
				`{"document_name": "vec", "document_type": "text", "id_at_origin": "v-1", "chunks": [{"content": "importer vector quokkaline", "embedding": ` + vectorJSON(routerTestDim, 3) + `}]}`,
				`{"document_name": "x", "document_type": "text", "content": "y", "owner_id": "imp-victim-` + string(tier) + `"}`,
			}
			var res httpapi.ImportResponse
			e.ok(t, importer, http.MethodPost, "/v1/documents/import", strings.Join(lines, "\n"), http.StatusOK, &res)
			require.Equal(t, 2, res.Created, "the reused id_at_origin is a new document of the importer")
			require.Equal(t, 1, res.FailedCount)
			require.Equal(t, "owner_id", res.Failed[0].Error.Field)

			// The victim's document is untouched and its tenant sees nothing of the import.
			var got struct {
				DocumentName string `json:"document_name"`
			}
			e.ok(t, victim, http.MethodGet, "/v1/documents/"+doc.DocumentID, nil, http.StatusOK, &got)
			require.Equal(t, "secret", got.DocumentName)
			require.Equal(t, 1, e.stats(t, victim).DocumentCount)
			for _, key := range []string{victim, bystander} {
				var out struct {
					Results []memory.SearchResult `json:"results"`
				}
				e.ok(t, key, http.MethodPost, "/v1/search", `{"search_type": "text", "query_text": "quokkaline"}`, http.StatusOK, &out)
				require.Empty(t, out.Results, "another tenant finds nothing of the import")
				e.ok(t, key, http.MethodPost, "/v1/search", `{"search_type": "vector", "query_embedding": `+vectorJSON(routerTestDim, 3)+`, "limit": 100}`,
					http.StatusOK, &out)
				for _, r := range out.Results {
					require.NotContains(t, r.Content, "quokkaline", "nor by its vector")
				}
			}
			require.Equal(t, 2, e.stats(t, importer).DocumentCount)
			var out struct {
				Results []memory.SearchResult `json:"results"`
			}
			e.ok(t, importer, http.MethodPost, "/v1/search", `{"search_type": "text", "query_text": "zebraphone"}`, http.StatusOK, &out)
			require.Empty(t, out.Results, "the importer finds nothing of the victim")
			// The importer cannot reach the victim's document by its id either.
			r := e.do(t, importer, http.MethodGet, "/v1/documents/"+doc.DocumentID, nil)
			require.Equal(t, http.StatusNotFound, r.status)
		})
	}
}
