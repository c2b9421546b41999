package dataplane

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

const (
	// reconcilePage is how many registry rows one reconciliation query reads.
	reconcilePage = 500
	// parkedRecheck is how long a tenant with embedding work that is not active (suspended,
	// provisioning) waits before the worker looks at it again.
	parkedRecheck = time.Minute
	// maxRetryBackoff caps the pause before the worker looks again at a tenant whose last look
	// failed (its queue could not be read).
	maxRetryBackoff = 5 * time.Minute
)

// placement is one database that holds tenant tables, as the embedding worker serves it: its
// pool and its work queue (memory.WorkQueue). Today the main database is the only one.
type placement struct {
	id    string
	queue *memory.WorkQueue
}

// placementOf is the placement of that id the worker serves.
func (s *Service) placementOf(id string) (placement, bool) {
	for _, p := range s.placements {
		if p.id == id {
			return p, true
		}
	}
	return placement{}, false
}

// runWorker embeds queued chunks until ctx ends: the work loop of each placement, plus a slow,
// rate-bounded reconciliation of every active tenant at start and every ReconcileInterval.
func (s *Service) runWorker(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range s.placements {
		wg.Go(func() { s.workLoop(ctx, p) })
	}
	wg.Go(func() { s.reconcileLoop(ctx) })
	wg.Wait()
}

// wakeWorker makes the work loops look at their queues now. It never blocks.
func (s *Service) wakeWorker() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// workLoop serves one placement's work queue: it claims up to WorkerConcurrency due tenants,
// serves them at once, and goes on; when none is due it sleeps until the earliest due time, at
// most WorkerInterval (work queued by other replicas), or until ingest wakes it. While the
// provider's circuit breaker is open it takes no work.
func (s *Service) workLoop(ctx context.Context, p placement) {
	failures := 0
	for ctx.Err() == nil {
		if g, ok := s.provider.(embed.Gate); ok {
			if d := g.OpenFor(); d > 0 {
				s.sleep(ctx, d, false)
				continue
			}
		}
		items, err := p.queue.Claim(ctx, s.cfg.WorkerConcurrency, memory.DefaultWorkerLease)
		if err != nil {
			if ctx.Err() == nil {
				failures++
				s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot read the work queue", slog.String("placement", p.id),
					slog.String("error", err.Error()))
				s.sleep(ctx, backoff(s.cfg.WorkerInterval, failures), false)
			}
			continue
		}
		failures = 0
		if len(items) > 0 {
			s.serve(ctx, p, items)
			continue
		}
		wait := s.cfg.WorkerInterval
		if at, ok, err := p.queue.Earliest(ctx); err == nil && ok {
			wait = min(wait, max(time.Until(at), time.Millisecond))
		}
		s.sleep(ctx, wait, true)
	}
}

// sleep waits d, or until ctx ends, or (with wakeable) until ingest wakes the worker.
func (s *Service) sleep(ctx context.Context, d time.Duration, wakeable bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	var wake <-chan struct{}
	if wakeable {
		wake = s.wake
	}
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}

// backoff is the pause after failures consecutive failures: base doubling, up to maxRetryBackoff.
func backoff(base time.Duration, failures int) time.Duration {
	return min(base<<min(max(failures-1, 0), 20), maxRetryBackoff)
}

// serve looks at claimed tenants, all at once (there are at most WorkerConcurrency). The registry
// says, in one query, which are still active and where they live: rows of deleted tenants, or of
// an earlier tenant of the same id in another schema, are dropped; suspended tenants wait.
func (s *Service) serve(ctx context.Context, p placement, items []memory.WorkItem) {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.OwnerID
	}
	tenants, err := registry.GetMany(ctx, s.pool, ids)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot read the registry", slog.String("error", err.Error()))
		}
		return // the claims lapse and the tenants are due again
	}
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Go(func() {
			t, ok := tenants[it.OwnerID]
			switch {
			case !ok || t.Status == registry.StatusDeleting || t.SchemaName != it.Schema ||
				(t.Tier != registry.TierShared && t.Tier != registry.TierSchema):
				s.settle(ctx, p, it, func(ctx context.Context) error { return p.queue.Remove(ctx, it) })
			case t.Status != registry.StatusActive:
				s.settle(ctx, p, it, func(ctx context.Context) error { return p.queue.Defer(ctx, it, parkedRecheck, false) })
			default:
				s.processOne(ctx, p, it)
			}
		})
	}
	wg.Wait()
}

// processOne embeds one tenant's due jobs, then reschedules the tenant at its next due job (or
// drops it from the queue when it has none left). When its queue cannot be read, the tenant is
// kept and looked at again after a backoff: it is never dropped for a failure.
func (s *Service) processOne(ctx context.Context, p placement, it memory.WorkItem) {
	scope := s.scopeOf(s.pool, it.Schema, it.OwnerID)
	n, err := s.worker.ProcessScope(ctx, scope)
	if ctx.Err() != nil {
		// Stopping: leave the tenant due at once for another replica.
		s.settle(ctx, p, it, func(ctx context.Context) error { return p.queue.Defer(ctx, it, 0, false) })
		return
	}
	if n > 0 {
		s.cfg.Logger.InfoContext(ctx, "embedding worker: embedded queued chunks", slog.String("tenant_id", it.OwnerID),
			slog.Int("chunks", n))
	}
	if err != nil {
		d := backoff(s.cfg.WorkerInterval, it.Failures+1)
		s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot serve the tenant's queue; retrying later",
			slog.String("tenant_id", it.OwnerID), slog.Duration("retry_in", d), slog.String("error", err.Error()))
		s.settle(ctx, p, it, func(ctx context.Context) error { return p.queue.Defer(ctx, it, d, true) })
		return
	}
	s.settle(ctx, p, it, func(ctx context.Context) error { return p.queue.Settle(ctx, scope, it) })
}

// settle runs one update of a claimed tenant's queue row, even while stopping (briefly). If it
// fails, the claim lapses and the tenant is due again within a lease.
func (s *Service) settle(ctx context.Context, p placement, it memory.WorkItem, update func(context.Context) error) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := update(uctx); err != nil {
		s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot update the work queue; the tenant is due again within its lease",
			slog.String("placement", p.id), slog.String("tenant_id", it.OwnerID), slog.String("error", err.Error()))
	}
}

// reconcileLoop runs a reconciliation pass at start and then every ReconcileInterval.
func (s *Service) reconcileLoop(ctx context.Context) {
	for ctx.Err() == nil {
		s.reconcile(ctx)
		t := time.NewTimer(s.cfg.ReconcileInterval)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// reconcile visits every active tenant of the shared and schema tiers, at most ReconcileRate per
// second, and lists in its placement's work queue any that has embedding jobs the queue does not
// know of: jobs queued before the queue existed, or whose row was lost. Ingest lists tenants
// itself, so in a healthy deployment this finds nothing; it is a slow safety net, bounded in
// rate so that it costs about the same at a million tenants as at ten (it just takes longer).
func (s *Service) reconcile(ctx context.Context) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.ReconcileRate))
	defer tick.Stop()
	start, after, visited, listed := time.Now(), "", 0, 0
	for ctx.Err() == nil {
		ts, err := registry.List(ctx, s.pool, registry.TenantListParams{After: after, Limit: reconcilePage,
			Statuses: []registry.Status{registry.StatusActive}})
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "embedding worker: reconciliation cannot read the registry; trying at the next pass",
					slog.String("error", err.Error()))
			}
			return
		}
		for _, t := range ts {
			if t.Tier != registry.TierShared && t.Tier != registry.TierSchema {
				continue
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p, known := s.placementOf(t.PlacementID)
			if !known {
				continue
			}
			visited++
			ok, err := p.queue.Reconcile(ctx, s.scopeOf(s.pool, t.SchemaName, t.ID))
			switch {
			case err != nil && ctx.Err() == nil && !memory.IsSchemaGone(err):
				s.cfg.Logger.WarnContext(ctx, "embedding worker: reconciliation cannot read a tenant's queue",
					slog.String("tenant_id", t.ID), slog.String("error", err.Error()))
			case ok:
				listed++
				s.cfg.Logger.InfoContext(ctx, "embedding worker: reconciliation found unlisted embedding work",
					slog.String("tenant_id", t.ID))
				s.wakeWorker()
			}
		}
		if len(ts) < reconcilePage {
			break
		}
		after = ts[len(ts)-1].ID
	}
	if ctx.Err() == nil {
		s.cfg.Logger.InfoContext(ctx, "embedding worker: reconciliation pass done", slog.Int("tenants", visited),
			slog.Int("listed", listed), slog.Duration("took", time.Since(start)))
	}
}
