package connrecycle_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/connrecycle"
)

// TestRecycler: a connection is kept while it served at most MaxSchemas distinct schemas (repeats
// do not count), closed at its first release beyond, and forgotten when closed; hooks already on
// the pool config still run; a negative limit never closes.
func TestRecycler(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given       int // maxSchemas
		schemas     int // distinct schemas served by conn a
		expectKeep  bool
		expectLimit int
	}{
		{given: 3, schemas: 3, expectKeep: true, expectLimit: 3},
		{given: 3, schemas: 4, expectKeep: false, expectLimit: 3},
		{given: 0, schemas: connrecycle.DefaultMaxSchemas, expectKeep: true, expectLimit: connrecycle.DefaultMaxSchemas},
		{given: 0, schemas: connrecycle.DefaultMaxSchemas + 1, expectKeep: false, expectLimit: connrecycle.DefaultMaxSchemas},
		{given: -1, schemas: 10000, expectKeep: true, expectLimit: -1},
	} {
		name := fmt.Sprintf("limit %d, %d schemas", tc.given, tc.schemas)
		b := connrecycle.New(tc.given)
		require.Equal(t, tc.expectLimit, b.MaxSchemas(), name)
		var released, closed int
		pc := &pgxpool.Config{
			AfterRelease: func(*pgx.Conn) bool { released++; return true },
			BeforeClose:  func(*pgx.Conn) { closed++ },
		}
		b.Configure(pc)
		a, other := &pgx.Conn{}, &pgx.Conn{}
		for i := range tc.schemas - 1 {
			b.Observe(a, fmt.Sprintf("tenant_%d", i))
			b.Observe(a, "tenantmem_shared") // the shared tier is one schema, however often served
		}
		b.Observe(other, "tenant_0")
		require.Equal(t, tc.expectKeep, pc.AfterRelease(a), name)
		require.True(t, pc.AfterRelease(other), name)
		require.Equal(t, 2, released, "the earlier hook ran: %s", name)
		if !tc.expectKeep {
			require.EqualValues(t, 1, b.Recycled(), name)
			pc.BeforeClose(a)
			require.Equal(t, 1, closed, name)
			// A new connection at the same address starts from zero.
			b.Observe(a, "tenant_x")
			require.True(t, pc.AfterRelease(a), name)
		} else {
			require.Zero(t, b.Recycled(), name)
		}
	}
}
