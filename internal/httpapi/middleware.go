package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// HeaderRequestID carries the request id, in requests (optional) and in every response.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLength bounds a client-supplied request id; longer or odd ones are replaced.
const maxRequestIDLength = 128

// requestInfo is the per-request state the middleware shares with handlers through the request
// context: the request id and, once a handler knows it, the tenant id for the access log.
type requestInfo struct {
	id string

	mu       sync.Mutex
	tenantID string
	// actingFor is the key's own tenant when a delegate key acts for tenantID.
	actingFor string
}

type requestInfoKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// RequestID returns the id of the request ctx belongs to, or "" outside a request.
func RequestID(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

// SetTenantID records the tenant a request is about, for the access log. Call it only with a
// validated tenant id. It is a no-op outside a request.
func SetTenantID(ctx context.Context, tenantID string) {
	if info := infoFrom(ctx); info != nil {
		info.mu.Lock()
		info.tenantID = tenantID
		info.mu.Unlock()
	}
}

// setActingFor records, for the access log, the tenant whose delegate key acts for the request's
// tenant.
func setActingFor(ctx context.Context, parent string) {
	if info := infoFrom(ctx); info != nil {
		info.mu.Lock()
		info.actingFor = parent
		info.mu.Unlock()
	}
}

func actingForOf(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		info.mu.Lock()
		defer info.mu.Unlock()
		return info.actingFor
	}
	return ""
}

func tenantIDOf(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		info.mu.Lock()
		defer info.mu.Unlock()
		return info.tenantID
	}
	return ""
}

// validRequestID accepts client-supplied ids that are safe to log and echo: 1 to 128 characters
// of [A-Za-z0-9._-].
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// routeLabel is the route template a request matched ("/v1/tenants/:id"), never the raw path, so
// it is safe as a metric label.
func routeLabel(c echo.Context) string {
	if p := c.Path(); p != "" {
		return p
	}
	return "unmatched"
}

// methodLabel bounds the method label to the standard methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// metrics are the HTTP metrics of one server. Their labels are bounded: server name, method,
// route template and status; never a tenant id or a raw path.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantmem_http_requests_total",
		Help: "HTTP requests served, by server, method, route template and status code.",
	}, []string{"server", "method", "route", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tenantmem_http_request_duration_seconds",
		Help:    "HTTP request latency, by server, method, route template and status class.",
		Buckets: prometheus.DefBuckets,
	}, []string{"server", "method", "route", "status_class"})
	var err error
	if requests, err = register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	return &metrics{requests: requests, duration: duration}, nil
}

// register registers c, or returns the identical collector already registered (several servers
// of one process share one registry and tell themselves apart by the server label).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, fmt.Errorf("httpapi: register metrics: %w", err)
	}
	return c, nil
}

// observe is the outermost middleware: it assigns the request id, renders errors through the
// error handler (so that it sees the final status), then writes the access log line and the
// metrics.
func observe(server string, logger *slog.Logger, m *metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			req := c.Request()
			id := req.Header.Get(HeaderRequestID)
			if !validRequestID(id) {
				id = newRequestID()
			}
			ctx := context.WithValue(req.Context(), requestInfoKey{}, &requestInfo{id: id})
			c.SetRequest(req.WithContext(ctx))
			c.Response().Header().Set(HeaderRequestID, id)

			if err := next(c); err != nil {
				c.Error(err)
			}

			took := time.Since(start)
			status := c.Response().Status
			route, method := routeLabel(c), methodLabel(req.Method)
			m.requests.WithLabelValues(server, method, route, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(server, method, route, strconv.Itoa(status/100)+"xx").Observe(took.Seconds())

			level := slog.LevelInfo
			switch {
			case status >= 500:
				level = slog.LevelWarn
			case route == "/healthz" || route == "/readyz" || route == "/metrics":
				level = slog.LevelDebug // probes and scrapes would drown the log
			}
			attrs := []slog.Attr{
				slog.String("server", server),
				slog.String("method", req.Method),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Float64("latency_ms", float64(took.Microseconds())/1000),
				slog.Int64("bytes_out", c.Response().Size),
				slog.String("request_id", id),
			}
			if t := tenantIDOf(ctx); t != "" {
				attrs = append(attrs, slog.String("tenant_id", t))
			}
			if p := actingForOf(ctx); p != "" {
				attrs = append(attrs, slog.String("delegated_by", p))
			}
			logger.LogAttrs(ctx, level, "http request", attrs...)
			return nil
		}
	}
}

// recoverPanics turns a panic in a handler into an error, which the error handler answers with a
// 500 and logs with the stack. http.ErrAbortHandler is re-raised: it is how a handler aborts.
func recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler { //nolint:errorlint // net/http panics with this exact value

					panic(r)
				}
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return next(c)
	}
}

// limitBody rejects request bodies larger than limit bytes with 413: at once when Content-Length
// says so, else when a handler reads past the limit.
func limitBody(limit int64, streamed []string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if slices.Contains(streamed, c.Path()) {
				return next(c)
			}
			req := c.Request()
			if req.ContentLength > limit {
				return &http.MaxBytesError{Limit: limit}
			}
			if req.Body != nil && req.Body != http.NoBody {
				// The underlying writer, so that net/http closes the connection after a 413.
				req.Body = http.MaxBytesReader(c.Response().Writer, req.Body, limit)
			}
			return next(c)
		}
	}
}
