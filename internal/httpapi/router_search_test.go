package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestSearchBadInputNever500: queries with nothing to search for, operators only, unbalanced
// quotes, 1,000 characters, and rerank parameters out of bounds get 400/413 naming the field, or
// a documented answer; never 500. A reranker that times out or answers garbage gives the
// unreranked order marked degraded.
func TestSearchBadInputNever500(t *testing.T) {
	t.Parallel()
	var mode atomic.Int32 // 0 good, 1 slow, 2 garbage
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Documents []string `json:"documents"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch mode.Load() {
		case 1:
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute): // past RerankTimeout: the client gives up first
			}
			return
		case 2:
			_, _ = w.Write([]byte(`{"results": "nope"}`))
			return
		}
		type res struct {
			Index int     `json:"index"`
			Score float64 `json:"relevance_score"`
		}
		out := struct {
			Results []res `json:"results"`
		}{}
		for i, d := range req.Documents {
			out.Results = append(out.Results, res{i, float64(len(d))})
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(fake.Close)
	e := newRouterEnvWith(t, routerOptions{rerankURL: fake.URL})
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		t.Run(string(tier), func(t *testing.T) {
			key := e.tenant("bad-"+string(tier), tier)
			for _, c := range []string{"Deploys wait for the nightly database backup.", "The backup is compressed.", "Plants need water."} {
				e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "d", "document_type": "text", "content": c},
					http.StatusCreated, nil)
			}
			long := strings.Repeat("backup ", 143)[:1000]
			for _, tc := range []struct {
				body   map[string]any
				status int
				field  string
			}{
				{map[string]any{"query_text": "the of and", "search_type": "text"}, 400, "query_text"},
				{map[string]any{"query_text": `- or "" -`, "search_type": "text"}, 400, "query_text"},
				{map[string]any{"query_text": `-backup`, "search_type": "text"}, 400, "query_text"},
				{map[string]any{"query_text": "the of and", "search_type": "hybrid"}, 200, ""},
				{map[string]any{"query_text": `"nightly database backup`, "search_type": "text"}, 200, ""},
				{map[string]any{"query_text": long, "search_type": "hybrid"}, 200, ""},
				{map[string]any{"query_text": long + "x", "search_type": "hybrid"}, 413, "query_text"},
				{map[string]any{"query_text": "backup", "rerank": true, "rerank_top_k": memory.MaxRerankTopK + 1}, 400, "rerank_top_k"},
				{map[string]any{"query_text": "backup", "rerank_top_k": 5}, 400, "rerank_top_k"},
				{map[string]any{"query_text": "backup", "recall_target": 1.5}, 400, "recall_target"},
				{map[string]any{"query_text": "backup", "chunk_metadata_filter": []int{1}}, 400, "chunk_metadata_filter"},
			} {
				res := e.do(t, key, http.MethodPost, "/v1/search", tc.body)
				require.Equal(t, tc.status, res.status, "%v: %s", tc.body, res.body)
				if tc.field != "" {
					require.Equal(t, tc.field, res.problem(t).Field, "%v", tc.body)
				}
			}
			for m, degraded := range map[int32]bool{0: false, 1: true, 2: true} {
				mode.Store(m)
				var out memory.SearchResponse
				e.ok(t, key, http.MethodPost, "/v1/search", map[string]any{"query_text": "backup database", "rerank": true},
					http.StatusOK, &out)
				require.Equal(t, degraded, out.Degraded, "reranker mode %d", m)
				require.NotEmpty(t, out.Results)
				if !degraded {
					require.NotNil(t, out.Results[0].RerankScore)
				} else {
					require.Equal(t, []string{memory.DegradedRerank}, out.DegradedReasons)
				}
			}
			mode.Store(0)
		})
	}
}

// TestSearchAnswersInOneBodyWithItsLength: a search answer is written whole, with its
// Content-Length (no chunked transfer encoding, however long), and its bytes are what encoding/json
// writes for it, as with every other answer.
func TestSearchAnswersInOneBodyWithItsLength(t *testing.T) {
	t.Parallel()
	e := newRouterEnv(t)
	key := e.tenant("one-body", registry.TierSchema)
	content := strings.Repeat("Backups of the <primary> database & its replicas run nightly. ", 120)
	e.ok(t, key, http.MethodPost, "/v1/documents", map[string]any{"document_name": "d", "document_type": "text", "content": content},
		http.StatusCreated, nil)
	for _, path := range []string{"/v1/search", "/v1/search?q=backups"} {
		var res response
		if path == "/v1/search" {
			res = e.ok(t, key, http.MethodPost, path, map[string]any{"query_text": "nightly backups", "limit": 10}, http.StatusOK, nil)
		} else {
			res = e.ok(t, key, http.MethodGet, path, nil, http.StatusOK, nil)
		}
		require.Greater(t, len(res.body), 2048, "%s: longer than net/http's buffer", path)
		require.Equal(t, strconv.Itoa(len(res.body)), res.header.Get("Content-Length"), path)
		require.Equal(t, "application/json", res.header.Get("Content-Type"), path)
		var out memory.SearchResponse
		res.decode(t, &out)
		require.NotEmpty(t, out.Results, path)
		var again bytes.Buffer
		require.NoError(t, json.NewEncoder(&again).Encode(out))
		require.Equal(t, again.String(), string(res.body), "%s: the bytes encoding/json writes (HTML-safe, a final newline)", path)
	}
}
