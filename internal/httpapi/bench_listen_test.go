package httpapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/routing"
)

// listenForBench runs the registry listener for resolver until the benchmark ends, as the
// router does in production (internal/dataplane), and waits until it listens. Without it a
// resolver never caches (routing.Resolver.SetCaching): every request would read the registry
// (registry.Authorize), a round trip and a query that the production router does not make.
func listenForBench(b testing.TB, routerURL string, resolver *routing.Resolver) {
	b.Helper()
	cc, err := pgx.ParseConfig(routerURL)
	require.NoError(b, err)
	ctx, stop := context.WithCancel(context.Background())
	listening := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- routing.Listen(ctx, routing.ListenerConfig{ConnConfig: cc, Resolver: resolver,
			OnListening: func() {
				select {
				case listening <- struct{}{}:
				default:
				}
			}})
	}()
	b.Cleanup(func() {
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			b.Errorf("registry listener: %v", err)
		}
	})
	select {
	case <-listening:
	case err := <-done:
		b.Fatalf("registry listener: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("registry listener: not listening after 30s")
	}
	require.True(b, resolver.Caching())
}
