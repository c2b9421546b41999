package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// retryLater is an error that carries its own Retry-After.
type retryLater struct{ after time.Duration }

func (e retryLater) Error() string             { return "busy" }
func (e retryLater) RetryAfter() time.Duration { return e.after }
func (e retryLater) Is(target error) bool      { return target == httpapi.ErrUnavailable }

func syntaxError(t *testing.T, doc string) error {
	t.Helper()
	err := json.Unmarshal([]byte(doc), new(map[string]any))
	require.Error(t, err)
	return err
}

func typeError(t *testing.T, doc string) error {
	t.Helper()
	var v struct {
		TenantID string `json:"tenant_id"`
	}
	err := json.Unmarshal([]byte(doc), &v)
	require.Error(t, err)
	return err
}

func TestMapError(t *testing.T) {
	t.Parallel()
	wrapped := func(err error) error { return fmt.Errorf("provision: do something: %w", err) }
	for _, tc := range []struct {
		given  string
		when   error
		expect httpapi.Problem
	}{
		{
			given:  "a field error",
			when:   &registry.FieldError{Field: "tenant_id", Message: "invalid tenant id: must not be empty"},
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "tenant_id: invalid tenant id: must not be empty", Field: "tenant_id"},
		},
		{
			given:  "a wrapped field error",
			when:   wrapped(&registry.FieldError{Field: "tier", Message: "unknown tier"}),
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "tier: unknown tier", Field: "tier"},
		},
		{
			given:  "a JSON syntax error",
			when:   syntaxError(t, `{"a": x}`),
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "body: invalid JSON at byte 7: invalid character 'x' looking for beginning of value", Field: "body"},
		},
		{
			given:  "a JSON type error",
			when:   typeError(t, `{"tenant_id": 7}`),
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "tenant_id: must be a string, not number", Field: "tenant_id"},
		},
		{
			given:  "a JSON document of the wrong type",
			when:   typeError(t, `"text"`),
			expect: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "body: must be a JSON object, not string", Field: "body"},
		},
		{
			// The driver's unexpected EOF is a lost connection, never a truncated body: bodies are
			// read and checked before any database work (decodeJSON).
			given:  "the driver's unexpected EOF",
			when:   fmt.Errorf("memory: commit: %w", io.ErrUnexpectedEOF),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", Message: "database unavailable", RetryAfter: 5 * time.Second},
		},
		{
			given:  "a body over the limit",
			when:   &http.MaxBytesError{Limit: 1024},
			expect: httpapi.Problem{Status: 413, Code: "payload_too_large", Message: "request body larger than 1024 bytes"},
		},
		{
			given:  "a bad API key",
			when:   registry.ErrUnauthenticated,
			expect: httpapi.Problem{Status: 401, Code: "unauthorized", Message: "invalid API key"},
		},
		{
			given:  "not found, with a client message",
			when:   httpapi.WithMessage(wrapped(registry.ErrNotFound), `tenant "acme" not found`),
			expect: httpapi.Problem{Status: 404, Code: "not_found", Message: `tenant "acme" not found`},
		},
		{
			given:  "already exists",
			when:   wrapped(registry.ErrExists),
			expect: httpapi.Problem{Status: 409, Code: "already_exists", Message: "provision: do something: already exists"},
		},
		{
			given:  "a conflict",
			when:   wrapped(registry.ErrConflict),
			expect: httpapi.Problem{Status: 409, Code: "conflict", Message: "provision: do something: conflict"},
		},
		{
			given:  "a deployment that is not initialised",
			when:   wrapped(provision.ErrNotInitialized),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", Message: provision.ErrNotInitialized.Error(), RetryAfter: 30 * time.Second},
		},
		{
			given:  "a database that cannot be reached",
			when:   wrapped(&pgconn.ConnectError{}),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", Message: "database unavailable", RetryAfter: 5 * time.Second},
		},
		{
			given:  "unavailable with its own retry time",
			when:   wrapped(retryLater{after: 42 * time.Second}),
			expect: httpapi.Problem{Status: 503, Code: "unavailable", Message: "provision: do something: busy", RetryAfter: 42 * time.Second},
		},
		{
			given:  "an echo HTTP error, wrapped",
			when:   fmt.Errorf("middleware: %w", echo.NewHTTPError(http.StatusTooManyRequests, "slow down")),
			expect: httpapi.Problem{Status: 429, Code: "rate_limited", Message: "slow down"},
		},
		{
			given:  "echo's route not found",
			when:   echo.ErrNotFound,
			expect: httpapi.Problem{Status: 404, Code: "not_found", Message: "Not Found"},
		},
		{
			given:  "an echo 500 with details",
			when:   echo.NewHTTPError(http.StatusInternalServerError, "secret detail"),
			expect: httpapi.Problem{Status: 500, Code: "internal", Message: "internal error"},
		},
		{
			given:  "an unknown error",
			when:   errors.New("pq: password authentication failed for user bob"),
			expect: httpapi.Problem{Status: 500, Code: "internal", Message: "internal error"},
		},
		{
			given:  "a cancelled context",
			when:   wrapped(context.Canceled),
			expect: httpapi.Problem{Status: 500, Code: "internal", Message: "internal error"},
		},
	} {
		t.Run(tc.given, func(t *testing.T) {
			require.Equal(t, tc.expect, httpapi.MapError(tc.when, httpapi.DefaultErrorRules()))
		})
	}
}

func TestMapErrorRulesAreExtensible(t *testing.T) {
	t.Parallel()
	errSuspended := errors.New("tenant suspended")
	errQuota := errors.New("quota exceeded")
	rules := append([]httpapi.ErrorRule{
		{Match: httpapi.Is(errSuspended), Status: http.StatusForbidden, Code: httpapi.CodeForbidden},
		{Match: httpapi.Is(errQuota), Status: http.StatusTooManyRequests, Code: httpapi.CodeRateLimited, RetryAfter: time.Minute,
			Message: func(error) string { return "too many requests" }},
		// Prepended rules win over the defaults.
		{Match: httpapi.Is(registry.ErrNotFound), Status: http.StatusNotFound, Code: httpapi.CodeNotFound,
			Message: func(error) string { return "document not found" }},
	}, httpapi.DefaultErrorRules()...)
	for _, tc := range []struct {
		given  string
		when   error
		expect httpapi.Problem
	}{
		{"a new domain error", fmt.Errorf("memory: %w", errSuspended),
			httpapi.Problem{Status: 403, Code: "forbidden", Message: "memory: tenant suspended"}},
		{"a new error with a fixed message", errQuota,
			httpapi.Problem{Status: 429, Code: "rate_limited", Message: "too many requests", RetryAfter: time.Minute}},
		{"an overridden default", registry.ErrNotFound,
			httpapi.Problem{Status: 404, Code: "not_found", Message: "document not found"}},
		{"a default", registry.ErrExists,
			httpapi.Problem{Status: 409, Code: "already_exists", Message: "already exists"}},
	} {
		require.Equal(t, tc.expect, httpapi.MapError(tc.when, rules), tc.given)
	}
}

func TestProblemJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(httpapi.ErrorBody{Error: httpapi.Problem{Status: 400, Code: "invalid_input", Message: "tier: unknown", Field: "tier", RetryAfter: time.Second}})
	require.NoError(t, err)
	require.JSONEq(t, `{"error": {"code": "invalid_input", "message": "tier: unknown", "field": "tier"}}`, string(b))
	b, err = json.Marshal(httpapi.ErrorBody{Error: httpapi.Problem{Status: 404, Code: "not_found", Message: "gone"}})
	require.NoError(t, err)
	require.False(t, strings.Contains(string(b), "field"))
}

// TestDatabaseOutagesAre503 is the class of issue 9's "clients must get the truth": every
// connection-level and server-availability failure, however it is wrapped, is 503 with
// Retry-After through the one error table; none is a 400 or a 500.
func TestDatabaseOutagesAre503(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return &pgconn.PgError{Severity: "FATAL", Code: code, Message: "x"} }
	for _, tc := range []struct {
		given string
		when  error
	}{
		{"the driver's unexpected EOF in a DELETE", fmt.Errorf("memory: delete document: %w", io.ErrUnexpectedEOF)},
		{"EOF at BEGIN", fmt.Errorf("memory: begin: %w", io.EOF)},
		{"backend terminated (57P01)", fmt.Errorf("memory: insert chunks: %w", pg("57P01"))},
		{"crash shutdown (57P02)", pg("57P02")},
		{"cannot connect now (57P03)", fmt.Errorf("registry: authenticate: %w", pg("57P03"))},
		{"too many connections (53300)", pg("53300")},
		{"disk full (53100)", fmt.Errorf("memory: commit: %w", pg("53100"))},
		{"out of memory (53200)", pg("53200")},
		{"io error (58030)", pg("58030")},
		{"connection failure (08006)", pg("08006")},
		{"read-only after a failover (25006)", pg("25006")},
		{"lock timeout (55P03)", pg("55P03")},
		{"serialization failure (40001)", pg("40001")},
		{"connection reset", fmt.Errorf("memory: search: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})},
		{"broken pipe", fmt.Errorf("x: %w", syscall.EPIPE)},
		{"conn closed", fmt.Errorf("memory: scope transaction: %w", pgconn.ErrConnClosed)},
		{"closed pool", fmt.Errorf("memory: acquire: %w", puddle.ErrClosedPool)},
		{"no connection in the bounded wait", fmt.Errorf("memory: acquire: %w", &limit.BusyError{What: "database connection", Waited: time.Second})},
	} {
		t.Run(tc.given, func(t *testing.T) {
			p := httpapi.MapError(tc.when, httpapi.RouterErrorRules())
			require.Equal(t, http.StatusServiceUnavailable, p.Status, "%+v", p)
			require.Equal(t, httpapi.CodeUnavailable, p.Code)
			require.Positive(t, p.RetryAfter)
			require.NotContains(t, p.Message, "x", "no server detail in the message")
		})
	}
}
