package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

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
	// share one registry: their series differ by the server label.
	Registerer prometheus.Registerer
	// Gatherer is what GET /metrics exposes. Default: Registerer, when it is also a Gatherer.
	Gatherer prometheus.Gatherer
	// BodyLimit is the largest accepted request body, in bytes; larger ones get 413. Default
	// [DefaultBodyLimit].
	BodyLimit int64
	// Ready reports whether the server can do its job; GET /readyz answers 503 while it returns an
	// error. Default: always ready.
	Ready func(ctx context.Context) error
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
		reg := prometheus.NewRegistry()
		c.Registerer = reg
		if c.Gatherer == nil {
			c.Gatherer = reg
		}
	}
	if c.Gatherer == nil {
		if g, ok := c.Registerer.(prometheus.Gatherer); ok {
			c.Gatherer = g
		}
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
	case c.Gatherer == nil:
		return errors.New("httpapi: Config.Gatherer is required when Registerer is not a Gatherer")
	case c.BodyLimit < 1:
		return fmt.Errorf("httpapi: BodyLimit %d must be positive", c.BodyLimit)
	}
	return nil
}

// New returns an echo instance with what every tenantmem server shares: the error handler, the
// middleware (request id, access log and metrics, panic recovery, body limit) and the routes
// GET /healthz, /readyz and /metrics. The caller adds its own routes.
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
		if err := cfg.Ready(ctx); err != nil {
			cfg.Logger.WarnContext(ctx, "not ready", slog.String("request_id", RequestID(ctx)),
				slog.String("error", err.Error()))
			if MapError(err, cfg.ErrorRules).Status != http.StatusServiceUnavailable {
				err = WithMessage(fmt.Errorf("%w: %w", ErrUnavailable, err), "not ready")
			}
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError),
	})))
	return e, nil
}
