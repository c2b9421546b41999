package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
)

// router opens the tenant router on the dev cluster, logged in as the router role (the cluster
// trusts loopback, so no password), with the builtin embedder, and listens on addr. It returns the
// address and a function that serves until ctx ends and then releases everything.
func (m *Main) router(ctx context.Context, addr, dbURL string, creds placement.Credentials, logger *slog.Logger, reg prometheus.Registerer) (net.Addr, func() error, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, nil, err
	}
	u.User = url.User(provision.DefaultRouterRole)
	svc, err := dataplane.Open(ctx, dataplane.Config{
		DatabaseURL:          u.String(),
		Logger:               logger,
		Registerer:           reg,
		PlacementCredentials: creds,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("router: %w", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		svc.Close()
		return nil, nil, fmt.Errorf("router: %w", err)
	}
	return ln.Addr(), func() error {
		defer svc.Close()
		return svc.Run(ctx, ln)
	}, nil
}
