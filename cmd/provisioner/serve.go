package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tenantmem/tenantmem/internal/command"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/version"
)

// envAdminToken holds the admin token. It is read from the environment only, never from a flag,
// so that it does not show in the process list.
const envAdminToken = "TENANTMEM_ADMIN_TOKEN"

type serveCmd struct {
	Listen           string        `name:"listen" env:"TENANTMEM_PROVISIONER_LISTEN" default:"127.0.0.1:8081" placeholder:"ADDR" help:"Address to listen on (default ${default}). The admin token comes from $$TENANTMEM_ADMIN_TOKEN (at least 16 characters)."`
	PromoteMinChunks int64         `name:"promote-min-chunks" env:"TENANTMEM_PROMOTE_MIN_CHUNKS" default:"0" placeholder:"N" help:"Promotion policy: move shared-tier tenants with at least N chunks to their own schema, one at a time (0, the default: off)."`
	PromoteInterval  time.Duration `name:"promote-interval" env:"TENANTMEM_PROMOTE_INTERVAL" default:"10m" placeholder:"DURATION" help:"How often the promotion policy runs (default ${default}); each run also finishes moves a crash left unfinished."`
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
		Gatherer:    reg,
	})
	if err != nil {
		return command.Usagef("serve: %v", err)
	}
	srv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: handler, Logger: rc.logger})
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(rc.ctx, "tcp", cmd.Listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	rc.logger.InfoContext(rc.ctx, "provisioner API listening", slog.String("addr", ln.Addr().String()))
	if rc.main.OnListen != nil {
		rc.main.OnListen(ln.Addr())
	}
	var wg sync.WaitGroup
	if cmd.PromoteMinChunks > 0 {
		// An interrupted move rolls itself back, so a shutdown never leaves writes paused.
		rc.logger.InfoContext(rc.ctx, "promotion policy on", slog.Int64("min_chunks", cmd.PromoteMinChunks),
			slog.Duration("interval", cmd.PromoteInterval))
		wg.Go(func() {
			prov.RunPromotion(rc.ctx, provision.PromoteParams{MinChunks: cmd.PromoteMinChunks}, cmd.PromoteInterval)
		})
	}
	err = srv.Serve(rc.ctx, ln)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	rc.logger.InfoContext(rc.ctx, "provisioner API stopped")
	return nil
}
