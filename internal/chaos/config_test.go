package chaos_test

import (
	"log/slog"
	"time"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/limit"
)

// routerConfig is the router of the scenarios: short time limits, so a frozen network ends in
// 503 within the scenario, and no tenant limits (the load must not be rate limited).
func routerConfig(url string, p embed.Provider, logger *slog.Logger) dataplane.Config {
	return dataplane.Config{
		DatabaseURL:      url,
		Provider:         p,
		Logger:           logger,
		MaxConns:         16,
		StatementTimeout: 5 * time.Second,
		RequestTimeout:   3 * time.Second,
		AcquireWait:      time.Second,
		Limits: limit.Limits{RequestsPerSecond: limit.Unlimited, Burst: limit.Unlimited, MaxConcurrent: limit.Unlimited,
			MaxDocuments: limit.Unlimited, MaxChunks: limit.Unlimited, MaxContentBytes: limit.Unlimited},
	}
}
