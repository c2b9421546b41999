package main

import (
	"context"
	"log/slog"
	"net"
)

// router starts the tenant router when it exists; until then the stack serves the provisioning
// API only.
func (m *Main) router(_ context.Context, _ string, _ string, _ *slog.Logger) (net.Addr, func() error, error) {
	return nil, nil, nil
}
