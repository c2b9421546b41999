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
	finished := make(chan struct{})
	var result error
	go func() {
		defer close(finished)
		result = routing.Listen(ctx, routing.ListenerConfig{ConnConfig: cc, Resolver: resolver,
			OnListening: func() {
				select {
				case listening <- struct{}{}:
				default:
				}
			}})
	}()
	b.Cleanup(func() {
		stop()
		<-finished
		if !errors.Is(result, context.Canceled) {
			b.Errorf("registry listener: %v", result)
		}
	})
	select {
	case <-listening:
	case <-finished:
		b.Fatalf("registry listener: %v", result)
	case <-time.After(30 * time.Second):
		b.Fatal("registry listener: not listening after 30s")
	}
	require.True(b, resolver.Caching())
}
