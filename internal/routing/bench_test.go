package routing_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// BenchmarkResolve compares a hot key (both caches hit: no query) with a miss (caches purged before
// each call: one registry query as the router role).
func BenchmarkResolve(b *testing.B) {
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(b, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "bench", Tier: registry.TierSchema})
	require.NoError(b, err)
	pool, err := pgxpool.New(ctx, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer pool.Close()
	r, err := routing.New(routing.Config{Pool: pool})
	require.NoError(b, err)
	// As when the registry listener is in place (production): a new resolver does not cache
	// until then, and "hit" read the registry on every call.
	r.SetCaching(true)

	b.Run("hit", func(b *testing.B) {
		_, err := r.Resolve(ctx, res.Key.Key)
		require.NoError(b, err)
		b.ReportAllocs()
		b.ResetTimer()
		misses := r.Stats().HandleMisses // every registry read counts here
		for range b.N {
			if _, err := r.Resolve(ctx, res.Key.Key); err != nil {
				b.Fatal(err)
			}
		}
		require.Equal(b, misses, r.Stats().HandleMisses, "a hit read the registry")
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			r.Purge()
			if _, err := r.Resolve(ctx, res.Key.Key); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandleMemory fills the caches with 100,000 tenants (a handle and a key each) and reports
// the heap they hold.
func BenchmarkHandleMemory(b *testing.B) {
	const n = 100_000
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := routing.New(routing.Config{Pool: &pgxpool.Pool{}, Handles: n, Keys: n})
		require.NoError(b, err)
		hash := make([]byte, 32)
		for i := range n {
			id := fmt.Sprintf("tenant-%06d", i)
			r.AddForTest(fmt.Sprintf("k%015d", i), id, "tenant_"+id, append([]byte(nil), hash...))
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		h, k := r.Len()
		require.Equal(b, n, h)
		require.Equal(b, n, k)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/tenant")
		runtime.KeepAlive(r)
	}
}
