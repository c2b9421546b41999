package embed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeServer is an OpenAI-compatible embeddings server. By default it embeds "text-<n>" as a
// vector whose first value is n, and lists the items of data in reverse order so that clients
// must place them by index. handle, when set, may answer a request itself.
type fakeServer struct {
	srv *httptest.Server
	dim int
	// handle answers request number call (1-based) and returns true, or returns false to let
	// the default answer go out.
	handle func(call int, w http.ResponseWriter, r *http.Request, in fakeRequest) bool

	calls       atomic.Int32
	inflight    atomic.Int32
	maxInflight atomic.Int32

	mu   sync.Mutex
	reqs []fakeRequest
}

// fakeRequest is a request as the server received it.
type fakeRequest struct {
	At     time.Time
	Method string
	Path   string
	Header http.Header
	Raw    map[string]json.RawMessage
	Model  string
	Input  []string
}

func newFakeServer(t *testing.T, dim int, handle func(call int, w http.ResponseWriter, r *http.Request, in fakeRequest) bool) *fakeServer {
	t.Helper()
	f := &fakeServer{dim: dim, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	call := int(f.calls.Add(1))

	in := fakeRequest{At: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &in.Raw)
	}
	if err == nil {
		err = json.Unmarshal(in.Raw["input"], &in.Input)
	}
	if err == nil {
		err = json.Unmarshal(in.Raw["model"], &in.Model)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, in)
	f.mu.Unlock()
	if err != nil {
		http.Error(w, `{"error":{"message":"bad request body"}}`, http.StatusBadRequest)
		return
	}
	if f.handle != nil && f.handle(call, w, r, in) {
		return
	}
	writeJSON(w, http.StatusOK, f.answer(in.Input))
}

// answer is the default response body for input: reversed data, each vector tagged by text.
func (f *fakeServer) answer(input []string) map[string]any {
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	data := make([]item, 0, len(input))
	for i := len(input) - 1; i >= 0; i-- {
		data = append(data, item{Object: "embedding", Index: i, Embedding: fakeVector(input[i], f.dim)})
	}
	return map[string]any{"object": "list", "data": data, "model": "fake", "usage": map[string]int{"prompt_tokens": 1}}
}

// fakeVector is [n, 1, 1, …] for "text-<n>" and [-1, 1, 1, …] otherwise.
func fakeVector(text string, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = 1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(text, "text-"))
	if err != nil {
		n = -1
	}
	v[0] = float32(n)
	return v
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fakeServer) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestOpenAI returns a provider talking to f, with fast retries unless cfg says otherwise.
func newTestOpenAI(t *testing.T, f *fakeServer, cfg OpenAIConfig) *OpenAI {
	t.Helper()
	cfg.BaseURL = cmpOr(cfg.BaseURL, f.srv.URL)
	cfg.Model = cmpOr(cfg.Model, "test-model")
	cfg.Dimension = cmpOr(cfg.Dimension, f.dim)
	cfg.MinBackoff = cmpOr(cfg.MinBackoff, time.Millisecond)
	cfg.MaxBackoff = cmpOr(cfg.MaxBackoff, 10*time.Millisecond)
	cfg.HTTPClient = f.srv.Client()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	p, err := NewOpenAI(cfg)
	require.NoError(t, err)
	return p
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func texts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("text-%d", i)
	}
	return out
}

// requireTexts checks that vs are the fake vectors of texts(len(vs)), in order.
func requireTexts(t *testing.T, vs [][]float32, dim int) {
	t.Helper()
	for i, v := range vs {
		require.Equal(t, fakeVector(fmt.Sprintf("text-%d", i), dim), v, "vector %d", i)
	}
}

func TestOpenAIBatchingAndOrder(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 8, nil)
	p := newTestOpenAI(t, f, OpenAIConfig{BatchSize: 100})
	require.Equal(t, "openai:test-model", p.Name())
	require.Equal(t, 8, p.Dimension())

	vs, err := p.Embed(context.Background(), texts(250))
	require.NoError(t, err)
	require.Len(t, vs, 250)
	requireTexts(t, vs, 8)

	reqs := f.requests()
	require.Len(t, reqs, 3)
	var sizes []int
	for _, r := range reqs {
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "/v1/embeddings", r.Path)
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, "test-model", r.Model)
		sizes = append(sizes, len(r.Input))
	}
	slices.Sort(sizes)
	require.Equal(t, []int{50, 100, 100}, sizes)
}

func TestOpenAIEmptyInput(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 8, nil)
	p := newTestOpenAI(t, f, OpenAIConfig{})
	vs, err := p.Embed(context.Background(), nil)
	require.NoError(t, err)
	require.NotNil(t, vs)
	require.Empty(t, vs)
	require.Empty(t, f.requests())
}

func TestOpenAIConcurrencyLimit(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, _ http.ResponseWriter, r *http.Request, _ fakeRequest) bool {
		select { // hold the request long enough for others to pile up
		case <-time.After(20 * time.Millisecond):
		case <-r.Context().Done():
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{BatchSize: 10, MaxConcurrency: 3})

	// Four callers share the provider: the limit is per provider, not per call.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := range errs {
		wg.Go(func() {
			vs, err := p.Embed(context.Background(), texts(100))
			if err == nil && len(vs) != 100 {
				err = fmt.Errorf("got %d vectors", len(vs))
			}
			errs[g] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, f.requests(), 40)
	require.LessOrEqual(t, f.maxInflight.Load(), int32(3))
	require.Greater(t, f.maxInflight.Load(), int32(1), "batches should run concurrently")
}

func TestOpenAIRetryAfter(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(call int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		if call == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": map[string]any{
				"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
			return true
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{MaxBackoff: 5 * time.Second})

	vs, err := p.Embed(context.Background(), texts(3))
	require.NoError(t, err)
	requireTexts(t, vs, 4)
	reqs := f.requests()
	require.Len(t, reqs, 2)
	require.GreaterOrEqual(t, reqs[1].At.Sub(reqs[0].At), time.Second, "Retry-After: 1 must be honoured")
}

func TestOpenAIRetryAfterTooLong(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		w.Header().Set("Retry-After", "120")
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": map[string]any{"message": "slow down"}})
		return true
	})
	p := newTestOpenAI(t, f, OpenAIConfig{MaxBackoff: time.Second})

	_, err := p.Embed(context.Background(), texts(3))
	require.ErrorIs(t, err, ErrRateLimited)
	require.True(t, IsTransient(err))
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 120*time.Second, apiErr.RetryAfter)
	require.Equal(t, http.StatusTooManyRequests, apiErr.StatusCode)
	require.Len(t, f.requests(), 1, "no point waiting 2 minutes in a goroutine: the caller decides")
}

func TestOpenAIInsufficientQuotaIsPermanent(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": map[string]any{
			"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}})
		return true
	})
	p := newTestOpenAI(t, f, OpenAIConfig{})

	_, err := p.Embed(context.Background(), texts(1))
	require.ErrorIs(t, err, ErrProvider)
	require.False(t, IsTransient(err))
	require.ErrorContains(t, err, "You exceeded your current quota")
	require.Len(t, f.requests(), 1)
}

func TestOpenAIServerErrorThenSuccess(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(call int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		if call == 1 {
			http.Error(w, "upstream overloaded", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{})

	vs, err := p.Embed(context.Background(), texts(5))
	require.NoError(t, err)
	requireTexts(t, vs, 4)
	require.Len(t, f.requests(), 2)
}

func TestOpenAIRetriesExhausted(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return true
	})
	p := newTestOpenAI(t, f, OpenAIConfig{MaxRetries: 2})

	_, err := p.Embed(context.Background(), texts(5))
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, IsTransient(err))
	require.ErrorContains(t, err, "giving up after 3 attempts")
	require.ErrorContains(t, err, "502 Bad Gateway: bad gateway")
	require.Len(t, f.requests(), 3)

	// A negative MaxRetries disables retries.
	f2 := newFakeServer(t, 4, f.handle)
	p2 := newTestOpenAI(t, f2, OpenAIConfig{MaxRetries: -1})
	_, err = p2.Embed(context.Background(), texts(5))
	require.ErrorIs(t, err, ErrUnavailable)
	require.Len(t, f2.requests(), 1)
}

func TestOpenAIBadRequestIsPermanent(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{
			"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error"}})
		return true
	})
	p := newTestOpenAI(t, f, OpenAIConfig{})

	_, err := p.Embed(context.Background(), texts(2))
	require.ErrorIs(t, err, ErrProvider)
	require.False(t, IsTransient(err))
	require.ErrorContains(t, err, "400 Bad Request")
	require.ErrorContains(t, err, "maximum context length")
	require.Len(t, f.requests(), 1, "no retry on 400")

	// A non-JSON body is quoted, shortened.
	f2 := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		http.Error(w, "<html>"+strings.Repeat("forbidden ", 500)+"</html>", http.StatusForbidden)
		return true
	})
	_, err = newTestOpenAI(t, f2, OpenAIConfig{}).Embed(context.Background(), texts(1))
	require.ErrorIs(t, err, ErrProvider)
	require.ErrorContains(t, err, "403 Forbidden: <html>forbidden forbidden")
	require.Less(t, len(err.Error()), 700)
}

func TestOpenAIPermanentErrorInOneBatchFailsCall(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, in fakeRequest) bool {
		if slices.Contains(in.Input, "text-150") {
			http.Error(w, "bad input", http.StatusUnprocessableEntity)
			return true
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{BatchSize: 100, MaxConcurrency: 1})

	vs, err := p.Embed(context.Background(), texts(300))
	require.Nil(t, vs)
	require.ErrorIs(t, err, ErrProvider)
	require.ErrorContains(t, err, "batch of texts 100 to 199")
	require.Len(t, f.requests(), 2, "the batch after the failed one is not sent")
}

func TestOpenAIBadResponses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		given     string // response body; %s is replaced by a valid 4-value vector
		expect    error
		expectMsg string
	}{
		{name: "wrong dimension", given: `{"data":[{"index":0,"embedding":[1,2,3]},{"index":1,"embedding":%s}]}`,
			expect: ErrDimensionMismatch, expectMsg: "vector 0 has 3 values, want 4"},
		{name: "too few items", given: `{"data":[{"index":0,"embedding":%s}]}`,
			expect: ErrBadResponse, expectMsg: "1 items for 2 inputs"},
		{name: "too many items", given: `{"data":[{"index":0,"embedding":%s},{"index":1,"embedding":%[1]s},{"index":2,"embedding":%[1]s}]}`,
			expect: ErrBadResponse, expectMsg: "3 items for 2 inputs"},
		{name: "duplicate index", given: `{"data":[{"index":1,"embedding":%s},{"index":1,"embedding":%[1]s}]}`,
			expect: ErrBadResponse, expectMsg: "index 1 appears twice"},
		{name: "index out of range", given: `{"data":[{"index":0,"embedding":%s},{"index":2,"embedding":%[1]s}]}`,
			expect: ErrBadResponse, expectMsg: "index 2"},
		{name: "missing index", given: `{"data":[{"index":0,"embedding":%s},{"embedding":%[1]s}]}`,
			expect: ErrBadResponse, expectMsg: "item 1 has no index"},
		{name: "NaN", given: `{"data":[{"index":0,"embedding":%s},{"index":1,"embedding":[NaN,1,1,1]}]}`,
			expect: ErrBadResponse, expectMsg: "decode JSON"},
		{name: "infinite after float32 conversion", given: `{"data":[{"index":0,"embedding":%s},{"index":1,"embedding":[1e39,1,1,1]}]}`,
			expect: ErrBadResponse, expectMsg: "non-finite value"},
		{name: "not JSON", given: `<html>oops</html>`, expect: ErrBadResponse, expectMsg: "<html>oops"},
		{name: "null embedding", given: `{"data":[{"index":0,"embedding":null},{"index":1,"embedding":%s}]}`,
			expect: ErrDimensionMismatch, expectMsg: "has 0 values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := tt.given
			if strings.Contains(body, "%") {
				body = fmt.Sprintf(body, "[0.5,0.5,0.5,0.5]")
			}
			f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, body)
				return true
			})
			p := newTestOpenAI(t, f, OpenAIConfig{})
			vs, err := p.Embed(context.Background(), texts(2))
			require.Nil(t, vs)
			require.ErrorIs(t, err, tt.expect)
			require.ErrorContains(t, err, tt.expectMsg)
			require.False(t, IsTransient(err))
			require.Len(t, f.requests(), 1, "a bad response is not retried")
		})
	}
}

func TestOpenAICancelDuringBackoff(t *testing.T) {
	t.Parallel()
	first := make(chan struct{})
	var once sync.Once
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		once.Do(func() { close(first) })
		return true
	})
	p := newTestOpenAI(t, f, OpenAIConfig{MinBackoff: time.Minute, MaxBackoff: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt time.Time
	go func() {
		select {
		case <-first:
		case <-time.After(10 * time.Second):
		}
		time.Sleep(20 * time.Millisecond) // let the client read the response and start waiting
		cancelledAt = time.Now()
		cancel()
	}()
	_, err := p.Embed(ctx, texts(3))
	returnedAt := time.Now()
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, IsTransient(err), "the caller's own cancellation is not the provider's fault")
	require.Less(t, returnedAt.Sub(cancelledAt), 5*time.Second, "Embed must not sit out a one-minute backoff")
	require.Len(t, f.requests(), 1)
}

func TestOpenAICancelWhileQueued(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFakeServer(t, 4, func(_ int, _ http.ResponseWriter, r *http.Request, _ fakeRequest) bool {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{MaxConcurrency: 1})

	// The first call holds the only slot until released.
	done := make(chan error, 1)
	go func() {
		_, err := p.Embed(context.Background(), texts(1))
		done <- err
	}()
	require.Eventually(t, func() bool { return f.inflight.Load() == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Embed(ctx, texts(1))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, IsTransient(err))

	close(release)
	require.NoError(t, <-done)
	require.Len(t, f.requests(), 1)
}

func TestOpenAIRequestTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, func(_ int, _ http.ResponseWriter, r *http.Request, _ fakeRequest) bool {
		select {
		case <-time.After(10 * time.Second):
		case <-r.Context().Done(): // the client gave up
		}
		return false
	})
	p := newTestOpenAI(t, f, OpenAIConfig{Timeout: 100 * time.Millisecond, MaxRetries: 2})

	start := time.Now()
	_, err := p.Embed(context.Background(), texts(2))
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, IsTransient(err), "a slow server is worth trying again later")
	require.ErrorContains(t, err, "giving up after 3 attempts")
	require.Len(t, f.requests(), 3)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestOpenAINetworkErrorIsTransient(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, nil)
	url := f.srv.URL
	f.srv.Close() // nothing listens there any more
	p := newTestOpenAI(t, f, OpenAIConfig{BaseURL: url, MaxRetries: 1})

	_, err := p.Embed(context.Background(), texts(2))
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, IsTransient(err))
	require.ErrorContains(t, err, "giving up after 2 attempts")
}

func TestOpenAIAuthorization(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, nil)

	_, err := newTestOpenAI(t, f, OpenAIConfig{APIKey: "sk-test-123"}).Embed(context.Background(), texts(1))
	require.NoError(t, err)
	_, err = newTestOpenAI(t, f, OpenAIConfig{}).Embed(context.Background(), texts(1))
	require.NoError(t, err)

	reqs := f.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "Bearer sk-test-123", reqs[0].Header.Get("Authorization"))
	require.NotContains(t, reqs[1].Header, "Authorization", "no key, no header")
}

func TestOpenAIDimensionsField(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, nil)

	_, err := newTestOpenAI(t, f, OpenAIConfig{}).Embed(context.Background(), texts(1))
	require.NoError(t, err)
	_, err = newTestOpenAI(t, f, OpenAIConfig{SendDimensions: true}).Embed(context.Background(), texts(1))
	require.NoError(t, err)

	reqs := f.requests()
	require.Len(t, reqs, 2)
	require.NotContains(t, reqs[0].Raw, "dimensions")
	require.JSONEq(t, `4`, string(reqs[1].Raw["dimensions"]))
	require.JSONEq(t, `["text-0"]`, string(reqs[1].Raw["input"]))
}

func TestOpenAIBaseURLForms(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, 4, nil)
	for _, base := range []string{f.srv.URL, f.srv.URL + "/", f.srv.URL + "/v1", f.srv.URL + "/v1/"} {
		_, err := newTestOpenAI(t, f, OpenAIConfig{BaseURL: base}).Embed(context.Background(), texts(1))
		require.NoError(t, err, base)
	}
	for _, r := range f.requests() {
		require.Equal(t, "/v1/embeddings", r.Path)
	}
}

func TestOpenAIConfigValidation(t *testing.T) {
	t.Parallel()
	valid := OpenAIConfig{Model: "m", Dimension: 8}
	tests := []struct {
		name      string
		given     func(c *OpenAIConfig)
		expectErr string
	}{
		{name: "defaults", given: func(*OpenAIConfig) {}},
		{name: "no model", given: func(c *OpenAIConfig) { c.Model = " " }, expectErr: "Model is required"},
		{name: "no dimension", given: func(c *OpenAIConfig) { c.Dimension = 0 }, expectErr: "Dimension must be in [1, 16000]"},
		{name: "huge dimension", given: func(c *OpenAIConfig) { c.Dimension = 16001 }, expectErr: "Dimension"},
		{name: "relative URL", given: func(c *OpenAIConfig) { c.BaseURL = "localhost:11434" }, expectErr: "BaseURL"},
		{name: "ftp URL", given: func(c *OpenAIConfig) { c.BaseURL = "ftp://host" }, expectErr: "BaseURL"},
		{name: "URL with query", given: func(c *OpenAIConfig) { c.BaseURL = "http://h/?x=1" }, expectErr: "BaseURL"},
		{name: "bad URL", given: func(c *OpenAIConfig) { c.BaseURL = "http://[::1" }, expectErr: "BaseURL"},
		{name: "batch too big", given: func(c *OpenAIConfig) { c.BatchSize = 2049 }, expectErr: "BatchSize"},
		{name: "negative batch", given: func(c *OpenAIConfig) { c.BatchSize = -1 }, expectErr: "BatchSize"},
		{name: "negative concurrency", given: func(c *OpenAIConfig) { c.MaxConcurrency = -1 }, expectErr: "MaxConcurrency"},
		{name: "negative timeout", given: func(c *OpenAIConfig) { c.Timeout = -time.Second }, expectErr: "Timeout"},
		{name: "negative min backoff", given: func(c *OpenAIConfig) { c.MinBackoff = -time.Second }, expectErr: "MinBackoff"},
		{name: "max below min", given: func(c *OpenAIConfig) { c.MinBackoff = time.Minute }, expectErr: "MaxBackoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tt.given(&cfg)
			p, err := NewOpenAI(cfg)
			if tt.expectErr != "" {
				require.ErrorContains(t, err, tt.expectErr)
				require.Nil(t, p)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestOpenAIConfigDefaults(t *testing.T) {
	t.Parallel()
	c := OpenAIConfig{Model: "m", Dimension: 8}.WithDefaults()
	require.Equal(t, "https://api.openai.com", c.BaseURL)
	require.Equal(t, 96, c.BatchSize)
	require.Equal(t, 4, c.MaxConcurrency)
	require.Equal(t, 30*time.Second, c.Timeout)
	require.Equal(t, 5, c.MaxRetries)
	require.Equal(t, 500*time.Millisecond, c.MinBackoff)
	require.Equal(t, 30*time.Second, c.MaxBackoff)
	require.NotNil(t, c.HTTPClient)
	require.NotNil(t, c.Logger)
	require.False(t, c.SendDimensions)
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	p, err := NewOpenAI(OpenAIConfig{Model: "m", Dimension: 8, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	require.NoError(t, err)
	tests := []struct {
		given  int // attempt
		expect time.Duration
	}{
		{given: 0, expect: 100 * time.Millisecond},
		{given: 1, expect: 200 * time.Millisecond},
		{given: 3, expect: 800 * time.Millisecond},
		{given: 4, expect: time.Second},
		{given: 60, expect: time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			d := p.backoff(tt.given)
			require.GreaterOrEqual(t, d, tt.expect/2, "attempt %d", tt.given)
			require.LessOrEqual(t, d, tt.expect, "attempt %d", tt.given)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		given  map[string]string
		expect time.Duration
	}{
		{given: nil, expect: 0},
		{given: map[string]string{"Retry-After": "1"}, expect: time.Second},
		{given: map[string]string{"Retry-After": " 20 "}, expect: 20 * time.Second},
		{given: map[string]string{"Retry-After": "0.5"}, expect: 500 * time.Millisecond},
		{given: map[string]string{"Retry-After": "0"}, expect: 0},
		{given: map[string]string{"Retry-After": "-3"}, expect: 0},
		{given: map[string]string{"Retry-After": "soon"}, expect: 0},
		{given: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, expect: 90 * time.Second},
		{given: map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)}, expect: 0},
		{given: map[string]string{"Retry-After-Ms": "250", "Retry-After": "1"}, expect: 250 * time.Millisecond},
		{given: map[string]string{"Retry-After-Ms": "junk", "Retry-After": "2"}, expect: 2 * time.Second},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.given {
			h.Set(k, v)
		}
		require.Equal(t, tt.expect, parseRetryAfter(h, now), "%v", tt.given)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		given      Config
		expectName string
		expectDim  int
		expectErr  string
	}{
		{name: "zero config is builtin 384", given: Config{}, expectName: "builtin-hash-384", expectDim: 384},
		{name: "builtin with dimension", given: Config{Kind: KindBuiltin, Dimension: 64}, expectName: "builtin-hash-64", expectDim: 64},
		{name: "builtin bad dimension", given: Config{Dimension: 4}, expectErr: "Dimension"},
		{name: "openai", given: Config{Kind: KindOpenAI, OpenAI: OpenAIConfig{Model: "text-embedding-3-small", Dimension: 1536}},
			expectName: "openai:text-embedding-3-small", expectDim: 1536},
		{name: "openai dimension from Config", given: Config{Kind: KindOpenAI, Dimension: 768, OpenAI: OpenAIConfig{Model: "nomic-embed-text"}},
			expectName: "openai:nomic-embed-text", expectDim: 768},
		{name: "openai same dimension twice", given: Config{Kind: KindOpenAI, Dimension: 768, OpenAI: OpenAIConfig{Model: "m", Dimension: 768}},
			expectName: "openai:m", expectDim: 768},
		{name: "openai conflicting dimensions", given: Config{Kind: KindOpenAI, Dimension: 768, OpenAI: OpenAIConfig{Model: "m", Dimension: 1024}},
			expectErr: "Dimension (768) and OpenAI.Dimension (1024) differ"},
		{name: "openai without model", given: Config{Kind: KindOpenAI, Dimension: 768}, expectErr: "Model is required"},
		{name: "unknown kind", given: Config{Kind: "sentence-transformers"}, expectErr: `Kind must be "builtin" or "openai"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(tt.given)
			if tt.expectErr != "" {
				require.ErrorContains(t, err, tt.expectErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.expectName, p.Name())
			require.Equal(t, tt.expectDim, p.Dimension())
		})
	}
}

func TestIsTransient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given  error
		expect bool
	}{
		{given: nil, expect: false},
		{given: ErrRateLimited, expect: true},
		{given: fmt.Errorf("wrapped: %w", ErrUnavailable), expect: true},
		{given: &APIError{StatusCode: 429}, expect: true},
		{given: &APIError{StatusCode: 408}, expect: true},
		{given: &APIError{StatusCode: 500}, expect: true},
		{given: &APIError{StatusCode: 429, Code: "insufficient_quota"}, expect: false},
		{given: &APIError{StatusCode: 401}, expect: false},
		{given: &APIError{StatusCode: 404}, expect: false},
		{given: ErrProvider, expect: false},
		{given: ErrBadResponse, expect: false},
		{given: ErrDimensionMismatch, expect: false},
		{given: context.Canceled, expect: false},
		{given: context.DeadlineExceeded, expect: false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.expect, IsTransient(tt.given), "%v", tt.given)
	}
}
