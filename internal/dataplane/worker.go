package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
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
	// queueRefresh is how often the worker reads again which databases hold tenant tables (new
	// placements, new or deleted database-tier tenants).
	queueRefresh = time.Minute
	// tenantDBInterval is the longest pause between two looks at the work queue of one tenant
	// database (database tier) when this router's ingest did not wake it: work queued there by
	// other replicas is found within it. A placement's main database is looked at every
	// WorkerInterval.
	tenantDBInterval = time.Minute
)

// workQueue is one database that holds tenant tables, as the embedding worker serves it: a
// placement's main database (shared and schema tiers) or a database-tier tenant's database. Each
// has its own work queue (memory.WorkQueue, migrations/placement).
type workQueue struct {
	key      registry.DatabaseKey
	pool     memory.Pool
	queue    *memory.WorkQueue
	interval time.Duration
	wake     chan struct{}
	stop     context.CancelFunc
}

// runWorker embeds queued chunks until ctx ends: one work loop per database that holds tenant
// tables (refreshed from the registry every minute), plus a slow, rate-bounded reconciliation of
// every active tenant at start and every ReconcileInterval.
func (s *Service) runWorker(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.reconcileLoop(ctx) })
	defer wg.Wait()
	for ctx.Err() == nil {
		s.refreshQueues(ctx, &wg)
		t := time.NewTimer(queueRefresh)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.refreshNow:
		}
		t.Stop()
	}
	s.queuesMu.Lock()
	for _, q := range s.queues {
		q.stop()
	}
	s.queuesMu.Unlock()
}

// refreshQueues starts a work loop for every database that holds tenant tables and has none, and
// stops the loops of databases that no longer do (a deleted tenant database, a disabled or
// removed placement). When the registry cannot be read it keeps the loops it has.
func (s *Service) refreshQueues(ctx context.Context, wg *sync.WaitGroup) {
	want, err := s.queueKeys(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot read the placements; keeping the work queues it has",
				slog.String("error", err.Error()))
		}
		return
	}
	s.queuesMu.Lock()
	defer s.queuesMu.Unlock()
	for key, q := range s.queues {
		if _, ok := want[key]; !ok {
			q.stop()
			delete(s.queues, key)
		}
	}
	for key := range want {
		if _, ok := s.queues[key]; ok {
			continue
		}
		pool := s.resolver.PoolFor(registry.Location{Placement: key.Placement, Database: key.Database})
		q := &workQueue{key: key, pool: pool, queue: memory.NewWorkQueue(pool), interval: s.cfg.WorkerInterval,
			wake: make(chan struct{}, 1)}
		if key.Database != "" {
			q.interval = max(s.cfg.WorkerInterval, tenantDBInterval)
		}
		qctx, stop := context.WithCancel(ctx)
		q.stop = stop
		s.queues[key] = q
		wg.Go(func() { s.workLoop(qctx, q) })
	}
}

// queueKeys lists the databases whose work queues the worker serves: the main database of every
// placement that is not disabled, and the database of every active or suspended database-tier
// tenant on those placements.
func (s *Service) queueKeys(ctx context.Context) (map[registry.DatabaseKey]struct{}, error) {
	ps, err := registry.ListPlacements(ctx, s.registry)
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	want := map[registry.DatabaseKey]struct{}{}
	for _, p := range ps {
		if p.State != registry.PlacementDisabled {
			served[p.Name] = true
			want[registry.DatabaseKey{Placement: p.Name}] = struct{}{}
		}
	}
	dbs, err := registry.ListTenantDatabases(ctx, s.registry)
	if err != nil {
		return nil, err
	}
	for _, k := range dbs {
		if served[k.Placement] {
			want[k] = struct{}{}
		}
	}
	return want, nil
}

// wakeWorker makes the work loop of a database look at its queue now. It never blocks.
func (s *Service) wakeWorker(key registry.DatabaseKey) {
	s.queuesMu.Lock()
	q := s.queues[key]
	s.queuesMu.Unlock()
	if q == nil {
		// A database the worker does not serve yet (a tenant database created since the last
		// refresh): refresh now, which starts its loop, and the loop looks at its queue at once.
		select {
		case s.refreshNow <- struct{}{}:
		default:
		}
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// workLoop serves one database's work queue: it claims up to WorkerConcurrency due tenants,
// serves them at once, and goes on; when none is due it sleeps until the earliest due time, at
// most the queue's interval (work queued by other replicas), or until ingest wakes it. While the
// provider's circuit breaker is open it takes no work.
func (s *Service) workLoop(ctx context.Context, q *workQueue) {
	failures := 0
	for ctx.Err() == nil {
		if g, ok := s.provider.(embed.Gate); ok {
			if d := g.OpenFor(); d > 0 {
				s.sleep(ctx, d, nil)
				continue
			}
		}
		items, err := q.queue.Claim(ctx, s.cfg.WorkerConcurrency, memory.DefaultWorkerLease)
		if err != nil {
			if ctx.Err() == nil {
				failures++
				// A placement that is down is logged by the pools, once for all its databases.
				if !errors.Is(err, placement.ErrUnavailable) {
					s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot read the work queue", slog.String("database", q.key.String()),
						slog.String("error", err.Error()))
				}
				s.sleep(ctx, backoff(s.cfg.WorkerInterval, failures), nil)
			}
			continue
		}
		failures = 0
		if len(items) > 0 {
			s.serve(ctx, q, items)
			continue
		}
		wait := q.interval
		if at, ok, err := q.queue.Earliest(ctx); err == nil && ok {
			wait = min(wait, max(time.Until(at), time.Millisecond))
		}
		s.sleep(ctx, wait, q.wake)
	}
}

// sleep waits d, or until ctx ends, or until wake (when not nil) fires.
func (s *Service) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
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
// an earlier tenant of the same id elsewhere, are dropped; suspended tenants wait.
func (s *Service) serve(ctx context.Context, q *workQueue, items []memory.WorkItem) {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.OwnerID
	}
	tenants, err := registry.GetMany(ctx, s.registry, ids)
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
			case !ok || t.Status == registry.StatusDeleting || t.SchemaName != it.Schema || t.Location().Key() != q.key:
				s.settle(ctx, q, it, func(ctx context.Context) error { return q.queue.Remove(ctx, it) })
			case t.Status != registry.StatusActive:
				s.settle(ctx, q, it, func(ctx context.Context) error { return q.queue.Defer(ctx, it, parkedRecheck, false) })
			default:
				s.processOne(ctx, q, it, t)
			}
		})
	}
	wg.Wait()
}

// processOne embeds one tenant's due jobs, then reschedules the tenant at its next due job (or
// drops it from the queue when it has none left). When its queue cannot be read, the tenant is
// kept and looked at again after a backoff: it is never dropped for a failure.
func (s *Service) processOne(ctx context.Context, q *workQueue, it memory.WorkItem, t registry.Tenant) {
	// Fenced like a request: the worker's writes wait for, and then notice, a delete, a
	// suspension or a move (a move's write pause holds them back; after its flip the tenant's
	// work is listed in its new database's queue).
	scope := s.resolver.HandleFor(t).Scope(s.cfg.StatementTimeout)
	n, err := s.worker.ProcessScope(ctx, scope)
	if ctx.Err() != nil {
		// Stopping: leave the tenant due at once for another replica.
		s.settle(ctx, q, it, func(ctx context.Context) error { return q.queue.Defer(ctx, it, 0, false) })
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
		s.settle(ctx, q, it, func(ctx context.Context) error { return q.queue.Defer(ctx, it, d, true) })
		return
	}
	s.settle(ctx, q, it, func(ctx context.Context) error { return q.queue.Settle(ctx, scope, it) })
}

// settle runs one update of a claimed tenant's queue row, even while stopping (briefly). If it
// fails, the claim lapses and the tenant is due again within a lease.
func (s *Service) settle(ctx context.Context, q *workQueue, it memory.WorkItem, update func(context.Context) error) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := update(uctx); err != nil {
		s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot update the work queue; the tenant is due again within its lease",
			slog.String("database", q.key.String()), slog.String("tenant_id", it.OwnerID), slog.String("error", err.Error()))
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

// reconcile visits every active tenant, wherever it lives, at most ReconcileRate per second, and
// lists in its database's work queue any that has embedding jobs the queue does not know of:
// jobs queued before the queue existed, or whose row was lost. Ingest lists tenants itself, so in
// a healthy deployment this finds nothing; it is a slow safety net, bounded in rate so that it
// costs about the same at a million tenants as at ten (it just takes longer).
func (s *Service) reconcile(ctx context.Context) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.ReconcileRate))
	defer tick.Stop()
	start, after, visited, listed := time.Now(), "", 0, 0
	for ctx.Err() == nil {
		ts, err := registry.List(ctx, s.registry, registry.TenantListParams{After: after, Limit: reconcilePage,
			Statuses: []registry.Status{registry.StatusActive}})
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "embedding worker: reconciliation cannot read the registry; trying at the next pass",
					slog.String("error", err.Error()))
			}
			return
		}
		for _, t := range ts {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			loc := t.Location()
			visited++
			ok, err := memory.ReconcileWork(ctx, s.scopeOf(s.resolver.PoolFor(loc), loc.Schema, loc.OwnerID))
			switch {
			case err != nil && ctx.Err() == nil && !memory.IsSchemaGone(err) && !errors.Is(err, placement.ErrUnavailable):
				s.cfg.Logger.WarnContext(ctx, "embedding worker: reconciliation cannot read a tenant's queue",
					slog.String("tenant_id", t.ID), slog.String("error", err.Error()))
			case err == nil && ok:
				listed++
				s.cfg.Logger.InfoContext(ctx, "embedding worker: reconciliation found unlisted embedding work",
					slog.String("tenant_id", t.ID))
				s.wakeWorker(loc.Key())
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
