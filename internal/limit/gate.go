package limit

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Gate is a share of a scarce resource: at most n holders at once. A request enters the gates it
// is subject to (its tier's share of the pool, a budget shared by several pools) before it takes
// a connection, so that trouble in one tier (a lock held on a shared table, a slow disk) can hold
// at most that share and never every connection of the router.
type Gate struct {
	name  string
	slots chan struct{}
}

// NewGate returns a gate of n slots (n < 1 means 1). name says what it guards, for errors and
// /readyz.
func NewGate(name string, n int) *Gate {
	return &Gate{name: name, slots: make(chan struct{}, max(1, n))}
}

// Name is what the gate guards.
func (g *Gate) Name() string { return g.name }

// Usage returns the slots held and the gate's size.
func (g *Gate) Usage() (inUse, size int) { return len(g.slots), cap(g.slots) }

// enter takes a slot, waiting until ctx ends.
func (g *Gate) enter(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Gate) leave() { <-g.slots }

// Pool hands out pooled connections: a *pgxpool.Pool, or one database of a placement
// (placement.Pools.DB), whose pool is made on first use.
type Pool interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

// Lease is a connection taken by [Acquire], with the gate slots that came with it. Release it
// exactly once.
type Lease struct {
	// Conn is the pooled connection.
	Conn  *pgxpool.Conn
	gates []*Gate
}

// Release returns the connection to its pool and leaves the gates.
func (l *Lease) Release() {
	l.Conn.Release()
	for _, g := range l.gates {
		g.leave()
	}
	l.gates = nil
}

// Acquire takes a connection of pool after a slot of each gate, in order, waiting at most wait in
// all (zero: as long as ctx allows). When the wait runs out first it returns a [*BusyError]
// (HTTP 503 with Retry-After) and holds nothing; when ctx ends it returns ctx's error. This is the
// one place where a request waits for the database: every bounded wait is built on it.
func Acquire(ctx context.Context, pool Pool, wait time.Duration, gates ...*Gate) (*Lease, error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, wait)
	}
	defer cancel()
	start := time.Now()
	busy := func(what string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("limit: wait for %s: %w", what, ctx.Err())
		}
		if wctx.Err() != nil {
			return &BusyError{What: what, Waited: time.Since(start)}
		}
		return err
	}
	held := make([]*Gate, 0, len(gates))
	leave := func() {
		for _, g := range held {
			g.leave()
		}
	}
	for _, g := range gates {
		if err := g.enter(wctx); err != nil {
			leave()
			return nil, busy(g.name, err)
		}
		held = append(held, g)
	}
	conn, err := pool.Acquire(wctx)
	if err != nil {
		leave()
		return nil, busy("database connection", err)
	}
	return &Lease{Conn: conn, gates: held}, nil
}
