package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmem/tenantmem/internal/command"
	"github.com/tenantmem/tenantmem/internal/console"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/version"
)

// envAdminToken holds the admin token. It is read from the environment only, never from a flag,
// so that it does not show in the process list.
const envAdminToken = "TENANTMEM_ADMIN_TOKEN"

type serveCmd struct {
	Listen              string        `name:"listen" env:"TENANTMEM_PROVISIONER_LISTEN" default:"127.0.0.1:8081" placeholder:"ADDR" help:"Address to listen on (default ${default}). The admin token comes from $$TENANTMEM_ADMIN_TOKEN (at least 16 characters)."`
	ConsoleSecureCookie bool          `name:"console-secure-cookie" env:"TENANTMEM_CONSOLE_SECURE_COOKIE" help:"Mark the operator console's session cookie Secure although the provisioner serves plain HTTP (a TLS-terminating proxy is in front)."`
	MetricsListen       string        `name:"metrics-listen" env:"TENANTMEM_PROVISIONER_METRICS_LISTEN" default:"127.0.0.1:9081" placeholder:"ADDR" help:"Address of the Prometheus /metrics listener, apart from the API port (default ${default})."`
	PromoteMinChunks    int64         `name:"promote-min-chunks" env:"TENANTMEM_PROMOTE_MIN_CHUNKS" default:"0" placeholder:"N" help:"Promotion policy: move shared-tier tenants with at least N chunks to their own schema, one at a time (0, the default: off)."`
	PromoteInterval     time.Duration `name:"promote-interval" env:"TENANTMEM_PROMOTE_INTERVAL" default:"10m" placeholder:"DURATION" help:"How often the promotion policy runs (default ${default}); each run also finishes moves a crash left unfinished."`
}

func (cmd *serveCmd) Run(rc *runContext) error {
	token, _ := rc.lookupEnv(envAdminToken)
	if token == "" {
		return command.Usagef("serve: %s is required: set it to a random secret of at least %d characters (e.g. `openssl rand -hex 32`)",
			envAdminToken, httpapi.MinAdminTokenLength)
	}
	if cmd.PromoteMinChunks < 0 || cmd.PromoteInterval <= 0 {
		return command.Usagef("serve: --promote-min-chunks must not be negative and --promote-interval must be positive")
	}
	if len(token) < httpapi.MinAdminTokenLength {
		return command.Usagef("serve: %s must be at least %d characters", envAdminToken, httpapi.MinAdminTokenLength)
	}
	rc.actor = "admin-api"
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	if _, err := registry.GetSettings(rc.ctx, rc.pool); errors.Is(err, registry.ErrNotFound) {
		rc.logger.WarnContext(rc.ctx, "the database is not initialised: /readyz answers 503 until `provisioner init` runs")
	} else if err != nil {
		rc.logger.WarnContext(rc.ctx, "database check failed; serving anyway", slog.String("error", err.Error()))
	}

	v := version.Get()
	rc.logger.InfoContext(rc.ctx, "provisioner API starting", slog.String("version", v.Version),
		slog.String("commit", v.Commit), slog.String("built", v.Date))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector())
	handler, err := httpapi.NewAdmin(httpapi.AdminConfig{
		Provisioner: prov,
		Pool:        rc.pool,
		AdminToken:  token,
		Logger:      rc.logger,
		Registerer:  reg,
	})
	if err != nil {
		return command.Usagef("serve: %v", err)
	}
	con, err := console.New(console.Config{Provisioner: prov, Pool: rc.pool, AdminToken: token,
		SecureCookie: cmd.ConsoleSecureCookie, Logger: rc.logger})
	if err != nil {
		return command.Usagef("serve: %v", err)
	}
	con.Mount(handler)
	srv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: handler, Logger: rc.logger})
	if err != nil {
		return err
	}
	metrics, err := httpapi.NewServer(httpapi.ServerConfig{Handler: httpapi.MetricsHandler(reg, rc.logger),
		Logger: rc.logger, ShutdownTimeout: time.Second})
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(rc.ctx, "tcp", cmd.Listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	mln, err := (&net.ListenConfig{}).Listen(rc.ctx, "tcp", cmd.MetricsListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("serve: metrics: %w", err)
	}
	rc.logger.InfoContext(rc.ctx, "provisioner API listening", slog.String("addr", ln.Addr().String()),
		slog.String("metrics_addr", mln.Addr().String()))
	if rc.main.OnListen != nil {
		rc.main.OnListen(ln.Addr())
	}
	if rc.main.OnMetricsListen != nil {
		rc.main.OnMetricsListen(mln.Addr())
	}
	g, gctx := errgroup.WithContext(rc.ctx)
	g.Go(func() error { return metrics.Serve(gctx, mln) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	if cmd.PromoteMinChunks > 0 {
		// An interrupted move rolls itself back, so a shutdown never leaves writes paused.
		rc.logger.InfoContext(rc.ctx, "promotion policy on", slog.Int64("min_chunks", cmd.PromoteMinChunks),
			slog.Duration("interval", cmd.PromoteInterval))
		g.Go(func() error {
			prov.RunPromotion(gctx, provision.PromoteParams{MinChunks: cmd.PromoteMinChunks}, cmd.PromoteInterval)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	rc.logger.InfoContext(rc.ctx, "provisioner API stopped")
	return nil
}
