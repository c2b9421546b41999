package httpapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server defaults.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = time.Minute
	DefaultWriteTimeout      = 5 * time.Minute // creating a tenant migrates its schema
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultShutdownTimeout   = 30 * time.Second
)

// ServerConfig configures a [Server].
type ServerConfig struct {
	// Handler serves the requests. Required.
	Handler http.Handler
	// Logger receives the server's own errors (bad TLS, broken connections). Default: discard.
	Logger *slog.Logger
	// Timeouts of http.Server; zero means the Default* constants.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// ShutdownTimeout bounds how long a shutdown waits for requests in flight before closing their
	// connections. Default [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c ServerConfig) WithDefaults() ServerConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	return c
}

func (c ServerConfig) validate() error {
	if c.Handler == nil {
		return errors.New("httpapi: ServerConfig.Handler is required")
	}
	return nil
}

// Server serves one handler with sane timeouts and a graceful shutdown. Several Servers can run in
// one process (the admin API and the router). A Server is safe for concurrent use; each Serve call
// runs its own http.Server.
type Server struct {
	cfg ServerConfig
}

// NewServer returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg}, nil
}

// Serve serves on ln until ctx is done, then shuts down: it stops accepting, lets requests in
// flight finish (their contexts are not cancelled by ctx) for up to ShutdownTimeout, then closes
// the remaining connections. It closes ln. It returns nil after a shutdown triggered by ctx, also
// when ShutdownTimeout cut requests off (that is logged as a warning: the shutdown itself is what
// was asked for), and the error when serving fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Requests in flight outlive ctx during the graceful shutdown, and are cancelled when it
	// times out, so that their database work stops too.
	base, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	srv := &http.Server{
		Handler:           s.cfg.Handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err // Serve never returns nil
	case <-ctx.Done():
	}
	s.cfg.Logger.InfoContext(ctx, "shutting down", slog.String("addr", ln.Addr().String()))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.cfg.Logger.WarnContext(ctx, "shutdown timeout reached; closing the connections of requests still in flight",
			slog.String("addr", ln.Addr().String()), slog.Duration("shutdown_timeout", s.cfg.ShutdownTimeout),
			slog.String("error", err.Error()))
		cancelRequests()
		_ = srv.Close()
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return nil
}
