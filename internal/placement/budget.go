package placement

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmem/tenantmem/internal/limit"
)

// budget bounds the connections open at once across every pool of a [Pools] (the control pool
// excepted). A slot is taken when a connection's socket is dialled and given back when that
// socket is closed, whatever closes it (the pool, an idle timeout, a failed handshake, a server
// that went away), so the count cannot drift from what the servers see.
type budget struct {
	slots   chan struct{} // nil: unlimited
	nudge   chan struct{} // a connection became idle somewhere: waiters look for one to close
	waiting atomic.Int32
	waits   atomic.Uint64 // dials that had to wait for a slot
	refused atomic.Uint64 // dials that gave up (ErrBudgetExhausted)
}

func newBudget(n int) *budget {
	b := &budget{nudge: make(chan struct{}, 1)}
	if n > 0 {
		b.slots = make(chan struct{}, n)
	}
	return b
}

// inUse is the number of slots taken.
func (b *budget) inUse() int {
	if b.slots == nil {
		return 0
	}
	return len(b.slots)
}

// released tells waiting dials that a connection became idle, so they close the least recently
// used idle connection (perhaps that one) for their slot. It never blocks.
func (b *budget) released() {
	if b.waiting.Load() == 0 {
		return
	}
	select {
	case b.nudge <- struct{}{}:
	default:
	}
}

// acquire takes a slot, waiting at most wait. While it waits it calls reclaim (at once, whenever a
// connection is given back, and every reclaimEvery), which closes idle connections of the least
// recently used other pools.
func (b *budget) acquire(ctx context.Context, wait time.Duration, reclaim func()) error {
	if b.slots == nil {
		return nil
	}
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	b.waits.Add(1)
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(reclaimEvery)
	defer tick.Stop()
	reclaim()
	for {
		select {
		case b.slots <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			b.refused.Add(1)
			return fmt.Errorf("%w: %w", ErrBudgetExhausted, &limit.BusyError{What: "slot of the connection budget", Waited: wait})
		case <-b.nudge:
			reclaim()
		case <-tick.C:
			reclaim()
		}
	}
}

// reclaimEvery is how often a waiting dial looks again for idle connections to close.
const reclaimEvery = 50 * time.Millisecond

func (b *budget) release() {
	if b.slots != nil {
		<-b.slots
	}
}

// budgetConn gives its slot back when the socket is closed, once.
type budgetConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
