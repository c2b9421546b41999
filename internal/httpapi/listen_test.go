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

// listenRegistry runs the registry listener for resolver until the test or benchmark ends, as the
// router does in production (internal/dataplane), and waits until it listens. Without it a
// resolver never caches (routing.Resolver.SetCaching): every request would read the registry
// (registry.Authorize), a round trip and a query that the production router does not make.
func listenRegistry(tb testing.TB, routerURL string, resolver *routing.Resolver) {
	tb.Helper()
	cc, err := pgx.ParseConfig(routerURL)
	require.NoError(tb, err)
	ctx, stop := context.WithCancel(context.Background())
	listening := make(chan struct{}, 1)
	finished := make(chan struct{})
	var result error
	go func() {
		defer close(finished)
		result = routing.Listen(ctx, routing.ListenerConfig{ConnConfig: cc, Resolver: resolver,
			MinBackoff: 10 * time.Millisecond,
			OnListening: func() {
				select {
				case listening <- struct{}{}:
				default:
				}
			}})
	}()
	tb.Cleanup(func() {
		stop()
		<-finished
		if !errors.Is(result, context.Canceled) {
			tb.Errorf("registry listener: %v", result)
		}
	})
	select {
	case <-listening:
	case <-finished:
		tb.Fatalf("registry listener: %v", result)
	case <-time.After(30 * time.Second):
		tb.Fatal("registry listener: not listening after 30s")
	}
	require.True(tb, resolver.Caching())
}
