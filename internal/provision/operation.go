package provision

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// OperationHeartbeat is how often a running operation writes its progress to the operations table
// (registry.UpdateOperation), also when nothing moved.
const OperationHeartbeat = 2 * time.Second

// operation reports one long-running operation's progress to the control table operations from a
// goroutine of its own, every [OperationHeartbeat], so the work never waits for that write. A
// failure to record is logged and otherwise ignored: progress reporting never fails the work.
type operation struct {
	p        *Provisioner
	id       int64
	progress func() (done, total, failed int64)
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// startOperation records a running operation whose progress the function returns when asked.
func (p *Provisioner) startOperation(ctx context.Context, params registry.OperationStartParams,
	progress func() (done, total, failed int64)) *operation {
	op := &operation{p: p, progress: progress, stop: make(chan struct{})}
	id, err := registry.StartOperation(ctx, p.pool, params)
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "cannot record the operation's progress", slog.String("kind", params.Kind),
			slog.String("error", err.Error()))
		return op
	}
	op.id = id
	op.wg.Go(func() {
		t := time.NewTicker(OperationHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-op.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				done, total, failed := op.progress()
				if err := registry.UpdateOperation(ctx, p.pool, id, done, total, failed); err != nil && ctx.Err() == nil {
					p.cfg.Logger.WarnContext(ctx, "cannot record the operation's progress", slog.Int64("operation_id", id),
						slog.String("error", err.Error()))
				}
			}
		}
	})
	return op
}

// finish stops the heartbeat and records the outcome (failed when err is set).
func (op *operation) finish(ctx context.Context, err error) {
	op.once.Do(func() {
		close(op.stop)
		op.wg.Wait()
		if op.id == 0 {
			return
		}
		done, total, failed := op.progress()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if ferr := registry.FinishOperation(ctx, op.p.pool, op.id, done, total, failed, err); ferr != nil {
			op.p.cfg.Logger.WarnContext(ctx, "cannot record the operation's outcome", slog.Int64("operation_id", op.id),
				slog.String("error", ferr.Error()))
		}
	})
}

// rowProgress follows the rows of a backup, restore or move for its operations row, and passes
// every report on to next (the caller's own progress output), when set.
type rowProgress struct {
	done, total atomic.Int64
	next        func(archive.Progress)
}

func (r *rowProgress) report(p archive.Progress) {
	r.done.Store(p.Rows)
	r.total.Store(p.TotalRows)
	if r.next != nil {
		r.next(p)
	}
}

func (r *rowProgress) get() (done, total, failed int64) { return r.done.Load(), r.total.Load(), 0 }
