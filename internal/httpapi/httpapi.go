package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultBodyLimit is the default request body limit: 1 MiB.
const DefaultBodyLimit int64 = 1 << 20

// Config configures the shared base of a tenantmem HTTP server, built by [New].
type Config struct {
	// Name is the server's name ("admin", "router"): the server label of its metrics and logs.
	// Required.
	Name string
	// Logger receives the access log and the details of server errors. Default: discard.
	Logger *slog.Logger
	// Registerer receives the HTTP metrics. Default: a new private registry. Several servers may
	// share one registry: their series differ by the server label. Serve them with
	// [MetricsHandler] on a listener of their own.
	Registerer prometheus.Registerer
	// BodyLimit is the largest accepted request body, in bytes; larger ones get 413. Default
	// [DefaultBodyLimit].
	BodyLimit int64
	// Ready reports whether the server can do its job; GET /readyz answers 503 while it returns an
	// error. Default: always ready.
	Ready func(ctx context.Context) error
	// ReadyDetails, when set, adds "details" to the body of GET /readyz, ready or not: the state
	// of parts whose trouble does not make the whole server unready (a tier, a pool, the
	// registry listener).
	ReadyDetails func(ctx context.Context) any
	// ErrorRules map errors to responses. Default: [DefaultErrorRules].
	ErrorRules []ErrorRule
	// StreamRoutes are route templates ("/v1/tenants/restore") whose handlers stream their
	// request bodies (tenant archives): BodyLimit does not apply to them.
	StreamRoutes []string
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	c.BodyLimit = cmp.Or(c.BodyLimit, DefaultBodyLimit)
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
	if c.ErrorRules == nil {
		c.ErrorRules = DefaultErrorRules()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("httpapi: Config.Name is required")
	case c.BodyLimit < 1:
		return fmt.Errorf("httpapi: BodyLimit %d must be positive", c.BodyLimit)
	}
	return nil
}

// New returns an echo instance with what every tenantmem server shares: the error handler, the
// middleware (request id, access log and metrics, panic recovery, body limit) and the routes
// GET /healthz and /readyz. The caller adds its own routes. Metrics are not served here: they
// have their own listener ([MetricsHandler]), never the tenant-facing or admin port.
func New(cfg Config) (*echo.Echo, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = newErrorHandler(cfg.Logger, cfg.ErrorRules)
	e.Use(observe(cfg.Name, cfg.Logger, m), recoverPanics, limitBody(cfg.BodyLimit, cfg.StreamRoutes))

	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		ctx := c.Request().Context()
		var details any
		if cfg.ReadyDetails != nil {
			details = cfg.ReadyDetails(ctx)
		}
		err := cfg.Ready(ctx)
		if err == nil {
			return c.JSON(http.StatusOK, readyBody{Status: "ready", Details: details})
		}
		cfg.Logger.WarnContext(ctx, "not ready", slog.String("request_id", RequestID(ctx)),
			slog.String("error", err.Error()))
		if MapError(err, cfg.ErrorRules).Status != http.StatusServiceUnavailable {
			err = WithMessage(fmt.Errorf("%w: %w", ErrUnavailable, err), "not ready")
		}
		p := MapError(err, cfg.ErrorRules)
		if p.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(max(1, int(p.RetryAfter.Round(time.Second)/time.Second))))
		}
		return c.JSON(p.Status, readyBody{Status: "not ready", Error: &p, Details: details})
	})
	return e, nil
}

// serveOpenAPI adds GET /openapi.json, the server's OpenAPI description as JSON (see package
// api). It needs no authentication: the description holds no secret, and clients and gateways
// read it before they have a key.
func serveOpenAPI(e *echo.Echo, doc func() ([]byte, error)) error {
	b, err := doc()
	if err != nil {
		return fmt.Errorf("httpapi: OpenAPI description: %w", err)
	}
	e.GET("/openapi.json", func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, b)
	})
	return nil
}

// readyBody is the body of GET /readyz.
type readyBody struct {
	Status  string   `json:"status"`
	Error   *Problem `json:"error,omitempty"`
	Details any      `json:"details,omitempty"`
}

// MetricsHandler serves GET /metrics (Prometheus) from g, and GET /healthz, for a listener of its
// own: metrics describe every tenant's traffic and are never served on the tenant-facing or
// admin port.
func MetricsHandler(g prometheus.Gatherer, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return mux
}
