package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// fakeOpenAI is a local server speaking the OpenAI embeddings API. Its answers come from a
// script: each request takes the next step, and the last step repeats.
type fakeOpenAI struct {
	srv      *httptest.Server
	inner    embed.Provider
	mu       sync.Mutex
	script   []string // "ok", "429:<seconds>", "wrongdim", "500"
	requests int
}

func newFakeOpenAI(t *testing.T, script ...string) *fakeOpenAI {
	t.Helper()
	f := &fakeOpenAI{inner: newBuiltin(t), script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOpenAI) setScript(s ...string) { f.mu.Lock(); f.script, f.requests = s, 0; f.mu.Unlock() }

func (f *fakeOpenAI) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.requests }

func (f *fakeOpenAI) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string   `json:"model"`
		Input []string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/v1/embeddings" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	step := f.script[min(f.requests, len(f.script)-1)]
	f.requests++
	f.mu.Unlock()
	var secs int
	switch {
	case step == "500":
		http.Error(w, `{"error":{"message":"boom"}}`, http.StatusInternalServerError)
		return
	case func() bool { _, err := fmt.Sscanf(step, "429:%d", &secs); return err == nil }():
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`))
		return
	}
	vecs, _ := f.inner.Embed(r.Context(), req.Input)
	type item struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	resp := struct {
		Data []item `json:"data"`
	}{}
	for i, v := range vecs {
		if step == "wrongdim" {
			v = v[:len(v)-1]
		}
		resp.Data = append(resp.Data, item{Index: i, Embedding: v})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (f *fakeOpenAI) provider(t *testing.T) embed.Provider {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p, err := embed.NewOpenAI(embed.OpenAIConfig{BaseURL: f.srv.URL, Model: "fake-embed", Dimension: testDim, APIKey: "sk-test",
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Second, MaxRetries: 2, HTTPClient: &http.Client{Transport: tr}})
	require.NoError(t, err)
	return p
}

// TestOpenAIProviderEndToEnd drives the engine and the worker with the OpenAI-compatible
// provider against a local fake server: a 429 with a short Retry-After is retried inside the
// call; a 429 asking for longer than MaxBackoff queues the chunks and the job honours the
// Retry-After; a wrong dimension is a permanent failure: ingest still stores the document, the
// worker fails the job, vector search reports the provider unavailable and hybrid degrades.
func TestOpenAIProviderEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	fake := newFakeOpenAI(t, "429:1", "ok")
	p := fake.provider(t)
	eng := newEngine(t, p)
	w := newWorker(t, p)
	s := e.tenant(t, registry.TierSchema)

	start := time.Now()
	add, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "falcon migration routes"})
	require.NoError(t, err)
	require.Equal(t, 1, add.EmbeddingsCreated, "retried after the 429")
	require.Equal(t, 2, fake.count())
	require.GreaterOrEqual(t, time.Since(start), time.Second, "Retry-After honoured")
	res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "falcon", SearchType: memory.SearchVector})
	require.NoError(t, err)
	require.Len(t, res.Results, 1)

	// A long Retry-After: the provider gives up at once, the chunk is queued and not retried
	// before the server's date.
	fake.setScript("429:3600")
	add, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "b", DocumentType: "text", Content: "eagle nesting"})
	require.NoError(t, err)
	require.Equal(t, 1, add.EmbeddingsPending)
	res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "eagle", SearchType: memory.SearchText})
	require.NoError(t, err)
	require.Len(t, res.Results, 1)
	n, err := w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n)
	var wait time.Duration
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT extract(epoch FROM next_attempt_at - now()) * interval '1 second' FROM `+
		s.Schema+`.embedding_jobs`).Scan(&wait))
	require.Greater(t, wait, 59*time.Minute)
	_, err = e.admin.Exec(ctx, `UPDATE `+s.Schema+`.embedding_jobs SET next_attempt_at = now()`) // time passes
	require.NoError(t, err)
	fake.setScript("ok")
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// A wrong dimension is permanent.
	fake.setScript("wrongdim")
	add, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "c", DocumentType: "text", Content: "heron fishing"})
	require.NoError(t, err)
	require.Equal(t, 1, add.EmbeddingsPending)
	require.Equal(t, 1, fake.count(), "a permanent error is not retried")
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n)
	qs, err := eng.EmbeddingStats(ctx, s)
	require.NoError(t, err)
	require.Equal(t, memory.EmbeddingQueueStats{Failed: 1}, qs)
	_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "heron", SearchType: memory.SearchVector})
	require.ErrorIs(t, err, memory.ErrEmbeddingUnavailable)
	require.ErrorIs(t, err, embed.ErrDimensionMismatch)
	res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "heron", SearchType: memory.SearchHybrid})
	require.NoError(t, err)
	require.True(t, res.Degraded)
	require.Len(t, res.Results, 1)

	// Fixed: the failed job is queued again and succeeds.
	fake.setScript("ok")
	_, err = eng.RetryFailedEmbeddings(ctx, s)
	require.NoError(t, err)
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	st, err := eng.Statistics(ctx, s)
	require.NoError(t, err)
	require.Zero(t, st.EmbeddingsPending+st.EmbeddingsFailed)
}
