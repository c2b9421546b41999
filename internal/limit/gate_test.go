package limit

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestAcquireIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.ServerURL())
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	gate := NewGate("shared tier connection", 1)

	held, err := Acquire(ctx, pool, time.Second, gate)
	require.NoError(t, err)
	inUse, size := gate.Usage()
	require.Equal(t, 1, inUse)
	require.Equal(t, 1, size)

	// The gate is full: a bounded wait, then a BusyError naming it, and nothing held.
	_, err = Acquire(ctx, pool, 50*time.Millisecond, gate)
	var be *BusyError
	require.ErrorAs(t, err, &be)
	require.ErrorIs(t, err, ErrBusy)
	require.Equal(t, "shared tier connection", be.What)
	require.Equal(t, time.Second, be.RetryAfter())

	// No gate, but the pool is empty: the same, naming the connection.
	_, err = Acquire(ctx, pool, 50*time.Millisecond)
	require.ErrorAs(t, err, &be)
	require.Equal(t, "database connection", be.What)

	// The caller's own end is not "busy".
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = Acquire(cctx, pool, time.Second, gate)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrBusy)

	held.Release()
	inUse, _ = gate.Usage()
	require.Zero(t, inUse)
	again, err := Acquire(ctx, pool, time.Second, gate)
	require.NoError(t, err, "everything was given back")
	again.Release()
}
