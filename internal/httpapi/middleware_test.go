package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
)

// newBase is the shared server base with a few test routes.
func newBase(t *testing.T, logs *logBuffer) *echo.Echo {
	t.Helper()
	e, err := httpapi.New(httpapi.Config{
		Name:      "test",
		Logger:    slog.New(slog.NewJSONHandler(logs, nil)),
		BodyLimit: 16,
		Ready:     func(context.Context) error { return fmt.Errorf("warming up: %w", httpapi.ErrUnavailable) },
	})
	require.NoError(t, err)
	e.GET("/ok", func(c echo.Context) error {
		httpapi.SetTenantID(c.Request().Context(), "tenant-a")
		return c.JSON(http.StatusOK, map[string]string{"request_id": httpapi.RequestID(c.Request().Context())})
	})
	e.GET("/panic", func(echo.Context) error { panic("boom") })
	e.GET("/wrapped-echo-error", func(echo.Context) error {
		return fmt.Errorf("handler: %w", echo.NewHTTPError(http.StatusForbidden, "no entry"))
	})
	e.GET("/db-secret", func(echo.Context) error { return errors.New("password=hunter2 rejected") })
	e.POST("/echo", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/plain", b)
	})
	return e
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, tc := range []struct {
		given        string
		method, path string
		requestID    string
		body         io.Reader
		expectStatus int
		expectCode   string // error code, "" for success
		expectID     func(t *testing.T, got string)
	}{
		{
			given: "a request id", method: http.MethodGet, path: "/ok", requestID: "abc-123.X_y",
			expectStatus: 200, expectID: func(t *testing.T, got string) { require.Equal(t, "abc-123.X_y", got) },
		},
		{
			given: "no request id", method: http.MethodGet, path: "/ok",
			expectStatus: 200, expectID: func(t *testing.T, got string) { require.Regexp(t, hexID, got) },
		},
		{
			given: "a request id with odd characters", method: http.MethodGet, path: "/ok", requestID: "a b\"c",
			expectStatus: 200, expectID: func(t *testing.T, got string) { require.Regexp(t, hexID, got) },
		},
		{
			given: "an overlong request id", method: http.MethodGet, path: "/ok", requestID: strings.Repeat("a", 129),
			expectStatus: 200, expectID: func(t *testing.T, got string) { require.Regexp(t, hexID, got) },
		},
		{
			given: "a panicking handler", method: http.MethodGet, path: "/panic", requestID: "panic-1",
			expectStatus: 500, expectCode: httpapi.CodeInternal,
		},
		{
			given: "a wrapped echo error", method: http.MethodGet, path: "/wrapped-echo-error",
			expectStatus: 403, expectCode: httpapi.CodeForbidden,
		},
		{
			given: "an internal error", method: http.MethodGet, path: "/db-secret", requestID: "secret-1",
			expectStatus: 500, expectCode: httpapi.CodeInternal,
		},
		{
			given: "a body within the limit", method: http.MethodPost, path: "/echo", body: strings.NewReader("0123456789abcdef"),
			expectStatus: 200,
		},
		{
			given: "a body over the limit", method: http.MethodPost, path: "/echo", body: strings.NewReader("0123456789abcdefg"),
			expectStatus: 413, expectCode: httpapi.CodePayloadTooLarge,
		},
		{
			given: "a chunked body over the limit", method: http.MethodPost, path: "/echo",
			body:         io.MultiReader(strings.NewReader("0123456789"), strings.NewReader("abcdefg")),
			expectStatus: 413, expectCode: httpapi.CodePayloadTooLarge,
		},
		{
			given: "a server that is not ready", method: http.MethodGet, path: "/readyz",
			expectStatus: 503, expectCode: httpapi.CodeUnavailable,
		},
		{
			given: "an unknown route", method: http.MethodGet, path: "/nowhere",
			expectStatus: 404, expectCode: httpapi.CodeNotFound,
		},
	} {
		t.Run(tc.given, func(t *testing.T) {
			t.Parallel()
			logs := &logBuffer{t: t}
			e := newBase(t, logs)
			req := httptest.NewRequest(tc.method, tc.path, tc.body)
			if tc.body != nil {
				if _, ok := tc.body.(*strings.Reader); !ok {
					req.ContentLength = -1 // chunked: the limit applies while reading
				}
			}
			if tc.requestID != "" {
				req.Header.Set(httpapi.HeaderRequestID, tc.requestID)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)

			require.Equal(t, tc.expectStatus, rec.Code, rec.Body.String())
			id := rec.Header().Get(httpapi.HeaderRequestID)
			require.NotEmpty(t, id)
			if tc.expectID != nil {
				tc.expectID(t, id)
				require.JSONEq(t, `{"request_id": "`+id+`"}`, rec.Body.String(), "handlers see the same id")
			}
			if tc.expectCode != "" {
				res := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
				p := res.problem(t)
				require.Equal(t, tc.expectCode, p.Code)
				if tc.expectStatus == 500 {
					require.Equal(t, "internal error; request id "+id, p.Message)
					failed := logs.records("request failed")
					require.Len(t, failed, 1)
					require.Equal(t, id, failed[0]["request_id"])
					require.NotEmpty(t, failed[0]["error"])
				}
				if tc.expectStatus == 503 {
					require.NotEmpty(t, rec.Header().Get("Retry-After"))
				}
			}
			require.NotContains(t, rec.Body.String(), "hunter2")
			require.NotContains(t, rec.Body.String(), "boom")

			// One access log line, with the bounded route label.
			lines := logs.records("http request")
			require.Len(t, lines, 1)
			require.EqualValues(t, tc.expectStatus, lines[0]["status"])
			require.Equal(t, id, lines[0]["request_id"])
			if tc.path == "/nowhere" {
				require.Equal(t, "unmatched", lines[0]["route"])
			} else {
				require.Equal(t, tc.path, lines[0]["route"])
			}
			if tc.path == "/ok" {
				require.Equal(t, "tenant-a", lines[0]["tenant_id"])
			} else {
				require.NotContains(t, lines[0], "tenant_id")
			}
		})
	}
}

func TestPanicIsLoggedWithItsStack(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{t: t}
	e := newBase(t, logs)
	req := httptest.NewRequest(http.MethodGet, "/panic", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	failed := logs.records("request failed")
	require.Len(t, failed, 1)
	require.Contains(t, failed[0]["error"], "panic: boom")
	require.Contains(t, failed[0]["error"], "middleware_test.go", "the stack points at the handler")
}

func TestNewValidatesItsConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given  httpapi.Config
		expect string
	}{
		{httpapi.Config{}, "Name is required"},
		{httpapi.Config{Name: "x", BodyLimit: -5}, "BodyLimit"},
	} {
		_, err := httpapi.New(tc.given)
		require.ErrorContains(t, err, tc.expect)
	}
}

func TestServerShutsDownGracefully(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		// The request's context outlives the server's: shutdown lets it finish.
		if r.Context().Err() != nil {
			http.Error(w, "cancelled", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	srv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: handler, ShutdownTimeout: 10 * time.Second})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		res, err := client.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		got <- result{body: string(b), err: err}
	}()
	<-entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	r := <-got
	require.NoError(t, r.err)
	require.Equal(t, "done", r.body)
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	_, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	require.Error(t, err, "the listener is closed")
}

func TestNewServerNeedsAHandler(t *testing.T) {
	t.Parallel()
	_, err := httpapi.NewServer(httpapi.ServerConfig{})
	require.ErrorContains(t, err, "Handler is required")
}
