package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

func TestRouterErrorRules(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("memory: search: %w", err) }
	for _, tc := range []struct {
		given  string
		when   error
		expect httpapi.Problem
	}{
		{
			given:  "a validation error",
			when:   wrap(&memory.ValidationError{Field: "limit", Message: "must be between 1 and 100, got 0"}),
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "limit: must be between 1 and 100, got 0", Field: "limit"},
		},
		{
			given:  "a value over a size limit",
			when:   wrap(&memory.ValidationError{Field: "content", Message: "at most 10 bytes", TooLarge: true}),
			expect: httpapi.Problem{Status: 413, Code: "payload_too_large", Message: "content: at most 10 bytes", Field: "content"},
		},
		{
			given:  "a missing document",
			when:   fmt.Errorf("memory: get document: %w", memory.ErrNotFound),
			expect: httpapi.Problem{Status: 404, Code: "not_found", Message: "document not found"},
		},
		{
			given:  "a suspended tenant",
			when:   fmt.Errorf("authenticate: %w", routing.ErrSuspended),
			expect: httpapi.Problem{Status: 403, Code: "forbidden", Message: "tenant is suspended"},
		},
		{
			given: "a tenant being provisioned",
			when:  fmt.Errorf("routing: tenant %q: database tier: %w", "secret-name", routing.ErrUnavailable),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", Message: "tenant is being provisioned or moved; retry later",
				RetryAfter: 5 * time.Second},
		},
		{
			given: "a statement timeout",
			when:  fmt.Errorf("%w: %w", memory.ErrTimeout, &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", RetryAfter: 5 * time.Second,
				Message: "the request exceeded its time limit; retry later or narrow it (smaller limit, more filters)"},
		},
		{
			given: "a query_canceled outside the engine",
			when:  fmt.Errorf("registry: authenticate: %w", &pgconn.PgError{Code: "57014"}),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", RetryAfter: 5 * time.Second,
				Message: "the request exceeded its time limit; retry later or narrow it (smaller limit, more filters)"},
		},
		{
			given: "a transient query embedding failure",
			when:  fmt.Errorf("%w: %w", memory.ErrEmbeddingUnavailable, fmt.Errorf("%w: 503 from upstream", embed.ErrUnavailable)),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", RetryAfter: 5 * time.Second,
				Message: "the embedding provider is unavailable, so the query could not be embedded; retry later, or use search_type text"},
		},
		{
			given: "a provider that timed out",
			when:  fmt.Errorf("%w: %w", memory.ErrEmbeddingUnavailable, fmt.Errorf("%w: %w", embed.ErrUnavailable, context.DeadlineExceeded)),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", RetryAfter: 5 * time.Second,
				Message: "the embedding provider is unavailable, so the query could not be embedded; retry later, or use search_type text"},
		},
		{
			given: "a permanent query embedding failure",
			when:  fmt.Errorf("%w: %w", memory.ErrEmbeddingUnavailable, fmt.Errorf("%w: 401 bad key sk-123", embed.ErrProvider)),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", RetryAfter: 60 * time.Second,
				Message: "the embedding provider rejected the query embedding; use search_type text until the operator fixes it"},
		},
		{
			given:  "a client that went away",
			when:   fmt.Errorf("memory: begin: %w", context.Canceled),
			expect: httpapi.Problem{Status: 499, Code: httpapi.CodeClientClosed, Message: "client closed the request"},
		},
		{
			given:  "an invalid key",
			when:   httpapi.WithMessage(registry.ErrUnauthenticated, "invalid API key"),
			expect: httpapi.Problem{Status: 401, Code: "unauthorized", Message: "invalid API key"},
		},
		{
			given:  "a body over the limit",
			when:   &http.MaxBytesError{Limit: 12},
			expect: httpapi.Problem{Status: 413, Code: "payload_too_large", Message: "request body larger than 12 bytes"},
		},
		{
			given:  "anything else",
			when:   errors.New("pq: relation documents does not exist"),
			expect: httpapi.Problem{Status: 500, Code: "internal", Message: "internal error"},
		},
	} {
		require.Equal(t, tc.expect, httpapi.MapError(tc.when, httpapi.RouterErrorRules()), tc.given)
	}
}

func TestNewRouterValidatesItsConfig(t *testing.T) {
	t.Parallel()
	engine, err := memory.New(memory.Config{Embedder: mustBuiltin(t)})
	require.NoError(t, err)
	resolver, err := routing.New(routing.Config{Pool: &pgxpool.Pool{}})
	require.NoError(t, err)
	for _, tc := range []struct {
		given  string
		when   httpapi.RouterConfig
		expect string
	}{
		{"no resolver", httpapi.RouterConfig{Engine: engine}, "Resolver is required"},
		{"no engine", httpapi.RouterConfig{Resolver: resolver}, "Engine is required"},
		{"negative body limit", httpapi.RouterConfig{Resolver: resolver, Engine: engine, BodyLimit: -1}, "BodyLimit"},
		{"negative timeout", httpapi.RouterConfig{Resolver: resolver, Engine: engine, StatementTimeout: -time.Second}, "StatementTimeout"},
	} {
		_, err := httpapi.NewRouter(tc.when)
		require.ErrorContains(t, err, tc.expect, tc.given)
	}
	_, err = httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine})
	require.NoError(t, err)
}

func mustBuiltin(t *testing.T) embed.Provider {
	t.Helper()
	b, err := embed.NewBuiltin(routerTestDim)
	require.NoError(t, err)
	return b
}
