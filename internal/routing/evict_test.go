package routing_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/routing"
)

// TestEvictTenantDropsItsKeysOnly: evicting a tenant drops every cached key of it, through the
// tenant index, and nothing else.
func TestEvictTenantDropsItsKeysOnly(t *testing.T) {
	t.Parallel()
	r, err := routing.New(routing.Config{Pool: &pgxpool.Pool{}})
	require.NoError(t, err)
	hash := make([]byte, 32)
	for i := range 1000 {
		r.AddForTest(fmt.Sprintf("k%015d", i), fmt.Sprintf("t%d", i%400), "s", hash)
	}
	_, keys := r.Len()
	require.Equal(t, 1000, keys)
	r.EvictTenant("t7") // keys 7, 407, 807
	handles, keys := r.Len()
	require.Equal(t, 997, keys)
	require.Equal(t, 399, handles)
	require.Equal(t, 997, r.IndexedKeys())
	r.EvictTenant("t7")
	r.EvictTenant("nobody")
	_, keys = r.Len()
	require.Equal(t, 997, keys)
	r.EvictKey(fmt.Sprintf("k%015d", 8))
	require.Equal(t, 996, r.IndexedKeys())
	r.Purge()
	require.Zero(t, r.IndexedKeys())
}

// TestTenantIndexStaysExact: whatever the interleaving of caching (with LRU evictions beyond the
// capacity), tenant and key evictions and purges, the tenant index ends holding exactly the
// cached keys, so it never grows without bound nor misses a key.
func TestTenantIndexStaysExact(t *testing.T) {
	t.Parallel()
	r, err := routing.New(routing.Config{Pool: &pgxpool.Pool{}, Keys: 300, Handles: 300})
	require.NoError(t, err)
	hash := make([]byte, 32)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 5000 {
				k := rng.IntN(1000)
				switch op := rng.IntN(100); {
				case op < 80:
					r.AddForTest(fmt.Sprintf("k%015d", k), fmt.Sprintf("t%d", k%250), "s", hash)
				case op < 95:
					r.EvictTenant(fmt.Sprintf("t%d", k%250))
				case op < 99:
					r.EvictKey(fmt.Sprintf("k%015d", k))
				default:
					r.Purge()
				}
			}
		})
	}
	wg.Wait()
	_, keys := r.Len()
	require.Equal(t, keys, r.IndexedKeys())
	for i := range 250 {
		r.EvictTenant(fmt.Sprintf("t%d", i))
	}
	_, keys = r.Len()
	require.Zero(t, keys, "evicting every tenant leaves no key behind")
	require.Zero(t, r.IndexedKeys())
}

// BenchmarkEvictTenant evicts one tenant from caches holding 100,000 tenants and their keys. It
// used to scan every cached key (O(cached keys)); the tenant index makes it O(the tenant's keys).
func BenchmarkEvictTenant(b *testing.B) {
	const n = 100_000
	r, err := routing.New(routing.Config{Pool: &pgxpool.Pool{}, Handles: n, Keys: n})
	require.NoError(b, err)
	hash := make([]byte, 32)
	for i := range n {
		r.AddForTest(fmt.Sprintf("k%015d", i), fmt.Sprintf("tenant-%06d", i), "s", hash)
	}
	b.ResetTimer()
	for i := range b.N {
		k := i % n
		r.EvictTenant(fmt.Sprintf("tenant-%06d", k))
		b.StopTimer()
		r.AddForTest(fmt.Sprintf("k%015d", k), fmt.Sprintf("tenant-%06d", k), "s", hash)
		b.StartTimer()
	}
}
