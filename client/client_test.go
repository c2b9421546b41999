package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestMain starts the throwaway PostgreSQL cluster of the end-to-end tests and fails the binary on
// leaked goroutines.
func TestMain(m *testing.M) { pgtest.Main(m) }

// script is an HTTP server that answers each request with the next of its answers (the last one
// repeats) and records what it received.
type script struct {
	mu       sync.Mutex
	answers  []answer
	requests []recorded
}

type answer struct {
	status     int
	retryAfter string
	body       string
}

type recorded struct {
	method, path, query, auth, body string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	i := min(len(s.requests), len(s.answers)-1)
	s.requests = append(s.requests, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
	a := s.answers[i]
	s.mu.Unlock()
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.Header().Set("X-Request-Id", "req-1")
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (s *script) recorded() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

const (
	unavailable = `{"error": {"code": "unavailable", "message": "tenant is being provisioned or moved; retry later"}}`
	rateLimited = `{"error": {"code": "rate_limited", "message": "slow down"}}`
	added       = `{"document_id": "d1", "chunks_created": 1, "embeddings_created": 1, "embeddings_pending": 0}`
)

// newScripted returns a Router on a scripted server whose waits are recorded instead of slept.
func newScripted(t *testing.T, cfg Config, answers ...answer) (*Router, *script, *[]time.Duration) {
	t.Helper()
	s := &script{answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cfg.BaseURL, cfg.Token = srv.URL+"/prefix", "tm_key"
	r, err := NewRouter(cfg)
	require.NoError(t, err)
	var waits []time.Duration
	backoff := r.c.http.Backoff
	r.c.http.Backoff = func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
		waits = append(waits, backoff(lo, hi, attempt, resp))
		return 0
	}
	return r, s, &waits
}

func TestRetries(t *testing.T) {
	t.Parallel()
	doc := DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "c"}
	for _, tc := range []struct {
		given        string
		cfg          Config
		answers      []answer
		expectTries  int
		expectWaits  []time.Duration
		expectStatus int // 0: success
		expectRetry  time.Duration
	}{
		{given: "503 with Retry-After, then 201: waits as told",
			answers:     []answer{{503, "2", unavailable}, {503, "1", unavailable}, {201, "", added}},
			expectTries: 3, expectWaits: []time.Duration{2 * time.Second, time.Second}},
		{given: "429 with Retry-After, then 201",
			answers:     []answer{{429, "3", rateLimited}, {201, "", added}},
			expectTries: 2, expectWaits: []time.Duration{3 * time.Second}},
		{given: "503 without Retry-After: exponential from RetryWaitMin",
			answers:     []answer{{503, "", unavailable}, {503, "", unavailable}, {201, "", added}},
			expectTries: 3, expectWaits: []time.Duration{500 * time.Millisecond, time.Second}},
		{given: "503 forever: MaxRetries retries, then the last error",
			answers:     []answer{{503, "1", unavailable}},
			expectTries: 4, expectWaits: []time.Duration{time.Second, time.Second, time.Second},
			expectStatus: 503, expectRetry: time.Second},
		{given: "a Retry-After beyond MaxRetryWait is not waited for",
			answers:     []answer{{503, "60", unavailable}},
			expectTries: 1, expectStatus: 503, expectRetry: time.Minute},
		{given: "a longer MaxRetryWait waits for it", cfg: Config{MaxRetryWait: 2 * time.Minute},
			answers:     []answer{{503, "60", unavailable}, {201, "", added}},
			expectTries: 2, expectWaits: []time.Duration{time.Minute}},
		{given: "retries disabled", cfg: Config{MaxRetries: -1},
			answers:     []answer{{503, "1", unavailable}},
			expectTries: 1, expectStatus: 503, expectRetry: time.Second},
		{given: "500 is not retried",
			answers:     []answer{{500, "", `{"error": {"code": "internal", "message": "internal error; request id r"}}`}},
			expectTries: 1, expectStatus: 500},
		{given: "400 is not retried",
			answers:     []answer{{400, "", `{"error": {"code": "invalid_input", "message": "content: must not be empty", "field": "content"}}`}},
			expectTries: 1, expectStatus: 400},
	} {
		t.Run(tc.given, func(t *testing.T) {
			t.Parallel()
			r, s, waits := newScripted(t, tc.cfg, tc.answers...)
			res, err := r.AddDocument(context.Background(), doc)
			reqs := s.recorded()
			require.Len(t, reqs, tc.expectTries)
			for _, req := range reqs {
				// Every attempt is the same request, body included.
				require.Equal(t, recorded{"POST", "/prefix/v1/documents", "", "Bearer tm_key",
					`{"document_name":"n","document_type":"text","content":"c"}`}, req)
			}
			require.Equal(t, tc.expectWaits, nilIfEmpty(*waits))
			if tc.expectStatus == 0 {
				require.NoError(t, err)
				require.Equal(t, "d1", res.DocumentID)
				require.True(t, res.Created)
				return
			}
			var apiErr *Error
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.expectStatus, apiErr.StatusCode)
			require.Equal(t, tc.expectRetry, apiErr.RetryAfter)
			require.Equal(t, "req-1", apiErr.RequestID)
			require.NotEmpty(t, apiErr.Message)
		})
	}
}

func nilIfEmpty(d []time.Duration) []time.Duration {
	if len(d) == 0 {
		return nil
	}
	return d
}

// TestRetryWaitEndsWithTheContext: a caller's deadline ends a wait for Retry-After at once.
func TestRetryWaitEndsWithTheContext(t *testing.T) {
	t.Parallel()
	s := &script{answers: []answer{{503, "25", unavailable}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	r, err := NewRouter(Config{BaseURL: srv.URL, Token: "tm_key"})
	require.NoError(t, err)
	// Long enough for the first answer to arrive on a loaded machine; far shorter than the 25 s.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = r.Statistics(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, s.recorded(), 1)
}

func TestErrorShapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given    answer
		expect   Error
		sentinel error
	}{
		{answer{400, "", `{"error": {"code": "invalid_input", "message": "limit: must be from 1 to 100", "field": "limit"}}`},
			Error{StatusCode: 400, Code: "invalid_input", Message: "limit: must be from 1 to 100", Field: "limit"}, ErrInvalidInput},
		{answer{401, "", `{"error": {"code": "unauthorized", "message": "invalid API key"}}`},
			Error{StatusCode: 401, Code: "unauthorized", Message: "invalid API key"}, ErrUnauthorized},
		{answer{403, "", `{"error": {"code": "forbidden", "message": "tenant is suspended"}}`},
			Error{StatusCode: 403, Code: "forbidden", Message: "tenant is suspended"}, ErrForbidden},
		{answer{404, "", `{"error": {"code": "not_found", "message": "document not found"}}`},
			Error{StatusCode: 404, Code: "not_found", Message: "document not found"}, ErrNotFound},
		{answer{409, "", `{"error": {"code": "already_exists", "message": "tenant \"a\" already exists"}}`},
			Error{StatusCode: 409, Code: "already_exists", Message: `tenant "a" already exists`}, ErrAlreadyExists},
		{answer{413, "", `{"error": {"code": "payload_too_large", "message": "content: too large", "field": "content"}}`},
			Error{StatusCode: 413, Code: "payload_too_large", Message: "content: too large", Field: "content"}, ErrPayloadTooLarge},
		// Not tenantmem's body (a proxy's page): the code comes from the status.
		{answer{502, "", "<html>Bad Gateway</html>"},
			Error{StatusCode: 502, Code: "internal", Message: "<html>Bad Gateway</html>"}, ErrInternal},
		{answer{409, "", ""}, Error{StatusCode: 409, Code: "conflict", Message: "Conflict"}, ErrConflict},
	} {
		r, _, _ := newScripted(t, Config{}, tc.given)
		_, err := r.Statistics(context.Background())
		var apiErr *Error
		require.ErrorAs(t, err, &apiErr, tc.given.body)
		tc.expect.RequestID, tc.expect.Method, tc.expect.Path = "req-1", "GET", "/prefix/v1/statistics"
		require.Equal(t, tc.expect, *apiErr)
		require.ErrorIs(t, err, tc.sentinel)
		for _, other := range []error{ErrInvalidInput, ErrNotFound, ErrUnavailable, ErrForbidden} {
			if !errors.Is(other, tc.sentinel) {
				require.NotErrorIs(t, err, other)
			}
		}
		require.Contains(t, err.Error(), fmt.Sprintf("GET /prefix/v1/statistics: %d %s", tc.expect.StatusCode, tc.expect.Code))
	}
}

// TestEveryServerCodeHasASentinel: a code the servers can send that this package does not know
// would reach callers as an *Error no sentinel matches.
func TestEveryServerCodeHasASentinel(t *testing.T) {
	t.Parallel()
	for _, code := range []string{httpapi.CodeInvalidInput, httpapi.CodeUnauthorized, httpapi.CodeForbidden,
		httpapi.CodeNotFound, httpapi.CodeMethodNotAllowed, httpapi.CodeAlreadyExists, httpapi.CodeConflict,
		httpapi.CodePayloadTooLarge, httpapi.CodeUnsupportedMedia, httpapi.CodeRateLimited, httpapi.CodeInternal,
		httpapi.CodeUnavailable} {
		require.Contains(t, codes, code)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given  Config
		expect string
	}{
		{Config{Token: "k"}, "BaseURL is required"},
		{Config{BaseURL: "127.0.0.1:8080", Token: "k"}, "must be an http or https URL"},
		{Config{BaseURL: "ftp://h", Token: "k"}, "must be an http or https URL"},
		{Config{BaseURL: "http://h"}, "Token is required"},
		{Config{BaseURL: "http://h", Token: "a b"}, "white space"},
		{Config{BaseURL: "http://h", Token: "k", MaxRetryWait: -time.Second}, "must not be negative"},
	} {
		_, err := NewRouter(tc.given)
		require.ErrorContains(t, err, tc.expect)
		_, err = NewAdmin(tc.given)
		require.ErrorContains(t, err, tc.expect)
	}
}

// TestPathsAndQueries: ids are escaped as one path segment each, and only set options are sent.
func TestPathsAndQueries(t *testing.T) {
	t.Parallel()
	s := &script{answers: []answer{{200, "", "{}"}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx := context.Background()
	a, err := NewAdmin(Config{BaseURL: srv.URL + "/", Token: "admin"})
	require.NoError(t, err)
	r, err := NewRouter(Config{BaseURL: srv.URL, Token: "key"})
	require.NoError(t, err)
	_, err = a.GetTenant(ctx, "acme/team 1")
	require.NoError(t, err)
	require.NoError(t, a.RevokeKey(ctx, "acme/x", "k1"))
	_, err = a.ListTenants(ctx, TenantListParams{Limit: 5, After: "a/b"})
	require.NoError(t, err)
	_, err = r.GetDocument(ctx, "../x", DocumentGetParams{IncludeChunks: true})
	require.NoError(t, err)
	_, err = r.ListDocuments(ctx, DocumentListParams{MetadataFilter: map[string]any{"space": "ops"}, OrderBy: OrderByUpdatedAt})
	require.NoError(t, err)
	_, err = r.QuickSearch(ctx, "deploy & backup", 0)
	require.NoError(t, err)
	got := s.recorded()
	require.Equal(t, []recorded{
		{"GET", "/v1/tenants/acme%2Fteam%201", "", "Bearer admin", ""},
		{"DELETE", "/v1/tenants/acme%2Fx/keys/k1", "", "Bearer admin", ""},
		{"GET", "/v1/tenants", "after=a%2Fb&limit=5", "Bearer admin", ""},
		{"GET", "/v1/documents/..%2Fx", "include_chunks=true", "Bearer key", ""},
		{"GET", "/v1/documents", "metadata_filter=%7B%22space%22%3A%22ops%22%7D&order_by=updated_at", "Bearer key", ""},
		{"GET", "/v1/search", "q=deploy+%26+backup", "Bearer key", ""},
	}, got)
}

// TestWireTypes: every JSON field of a server type has its twin in the client type and the
// other way round, so a field added on one side fails here until the other side has it.
func TestWireTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		client, server any
	}{
		{DocumentAddParams{}, httpapi.DocumentAddRequest{}},
		{ChunkingOptions{}, memory.ChunkingOptions{}},
		{ChunkInput{}, memory.ChunkInput{}},
		{DocumentAddResult{}, memory.DocumentAddResult{}},
		{Document{}, memory.Document{}},
		{Chunk{}, memory.Chunk{}},
		{DocumentWithChunks{}, memory.DocumentWithChunks{}},
		{DocumentListResult{}, memory.DocumentListResult{}},
		{DocumentDeleteManyParams{}, httpapi.DocumentDeleteManyRequest{}},
		{DocumentDeleteManyResult{}, memory.DocumentDeleteManyResult{}},
		{SearchParams{}, httpapi.SearchRequest{}},
		{SearchResult{}, memory.SearchResult{}},
		{ParentChunk{}, memory.ParentChunk{}},
		{SearchResponse{}, memory.SearchResponse{}},
		{searchHistoryResponse{}, httpapi.SearchHistoryResponse{}},
		{SearchHistoryEntry{}, memory.SearchHistoryEntry{}},
		{Statistics{}, memory.Statistics{}},
		{EmbeddingQueueStats{}, memory.EmbeddingQueueStats{}},
		{embeddingRetryResult{}, httpapi.EmbeddingRetryResponse{}},
		{Tenant{}, registry.Tenant{}},
		{APIKey{}, registry.APIKey{}},
		{IssuedKey{}, registry.IssuedKey{}},
		{TenantCreateParams{}, httpapi.TenantCreateRequest{}},
		{TenantCreateResult{}, provision.TenantCreateResult{}},
		{TenantListResult{}, httpapi.TenantListResponse{}},
		{TenantBulkCreateParams{}, httpapi.TenantBulkCreateRequest{}},
		{TenantBulkCreateResult{}, httpapi.TenantBulkCreateResponse{}},
		{TenantCreatedKey{}, provision.TenantCreatedKey{}},
		{tenantResponse{}, httpapi.TenantResponse{}},
		{keyListResponse{}, httpapi.KeyListResponse{}},
		{errorBody{}, httpapi.ErrorBody{}},
		{problem{}, httpapi.Problem{}},
	} {
		c, s := reflect.TypeOf(tc.client), reflect.TypeOf(tc.server)
		require.Equal(t, jsonFields(s), jsonFields(c), "client.%s versus %s", c.Name(), s)
	}
}

// jsonFields lists the JSON names of a struct's fields, embedded structs flattened, sorted.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported():
		case f.Anonymous && tag == "":
			names = append(names, jsonFields(f.Type)...)
		case name == "":
			names = append(names, f.Name)
		default:
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// TestErrorsAsThroughWrapping: a wrapped *Error is still found by errors.As and errors.Is.
func TestErrorsAsThroughWrapping(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("sync documents: %w", &Error{StatusCode: 503, Code: "unavailable", RetryAfter: 5 * time.Second})
	var apiErr *Error
	require.True(t, errors.As(err, &apiErr))
	require.Equal(t, 5*time.Second, apiErr.RetryAfter)
	require.ErrorIs(t, err, ErrUnavailable)
}

// TestConnectionErrorsAreNotRetried: a connection that breaks mid-request may have been acted on
// (the document written), so the client reports it instead of sending the POST again.
func TestConnectionErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer srv.Close()
	r, err := NewRouter(Config{BaseURL: srv.URL, Token: "tm_key"})
	require.NoError(t, err)
	_, err = r.AddDocument(context.Background(), DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "c"})
	require.ErrorContains(t, err, "client: POST /v1/documents")
	var apiErr *Error
	require.False(t, errors.As(err, &apiErr), "no answer, so no *Error")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, hits)
}
