package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// sweepPage is how many registry rows one sweep query reads.
const sweepPage = 1000

// embedQueue is the set of tenants that may have queued embeddings, each with the time it is next
// looked at. It is filled by ingest (OnIngest) and by the sweep of active tenants.
type embedQueue struct {
	mu      sync.Mutex
	tenants map[string]*queued
	wake    chan struct{}
}

type queued struct {
	scope memory.Scope
	next  time.Time
	idle  int // consecutive looks that embedded nothing
}

func newEmbedQueue() *embedQueue {
	return &embedQueue{tenants: map[string]*queued{}, wake: make(chan struct{}, 1)}
}

// add makes a tenant due at the given time (or earlier, if it already was) and wakes the worker.
// It never blocks.
func (q *embedQueue) add(s memory.Scope, at time.Time) {
	q.mu.Lock()
	if t, ok := q.tenants[s.OwnerID]; ok {
		t.scope = s
		if at.Before(t.next) {
			t.next, t.idle = at, 0
		}
	} else {
		q.tenants[s.OwnerID] = &queued{scope: s, next: at}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// addIfAbsent adds a tenant the sweep found, unless it is already tracked.
func (q *embedQueue) addIfAbsent(s memory.Scope, at time.Time) {
	q.mu.Lock()
	if _, ok := q.tenants[s.OwnerID]; !ok {
		q.tenants[s.OwnerID] = &queued{scope: s, next: at}
	}
	q.mu.Unlock()
}

// takeDue removes and returns the tenants due at now, and says when the next one is due (zero
// when none is tracked).
func (q *embedQueue) takeDue(now time.Time) (due []*queued, next time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, t := range q.tenants {
		if !t.next.After(now) {
			due = append(due, t)
			delete(q.tenants, id)
		} else if next.IsZero() || t.next.Before(next) {
			next = t.next
		}
	}
	return due, next
}

// requeue puts a processed tenant back, unless ingest re-added it meanwhile (then the earlier time
// wins).
func (q *embedQueue) requeue(t *queued) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if cur, ok := q.tenants[t.scope.OwnerID]; ok {
		if t.next.Before(cur.next) {
			cur.next = t.next
		}
		return
	}
	q.tenants[t.scope.OwnerID] = t
}

// runWorker embeds queued chunks until ctx ends. Its source is the set of tenants that queued
// embeddings at ingest, plus every active tenant at start and every SweepInterval (work left by a
// crash, by another replica, or by jobs whose backoff outlived the tenant's place in the set). A
// tenant without pending jobs leaves the set; one whose jobs are not due yet is looked at again
// after WorkerInterval, doubling up to SweepInterval.
func (s *Service) runWorker(ctx context.Context) {
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	s.sweep(ctx)
	for ctx.Err() == nil {
		select {
		case <-sweep.C:
			s.sweep(ctx)
		default:
		}
		due, next := s.queue.takeDue(time.Now())
		if len(due) > 0 {
			s.process(ctx, due)
			continue
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-s.queue.wake:
		case <-timer:
		case <-sweep.C:
			s.sweep(ctx)
		}
		if t != nil {
			t.Stop()
		}
	}
}

// sweep adds every active tenant to the queue, wherever it lives.
func (s *Service) sweep(ctx context.Context) {
	after, n := "", 0
	for ctx.Err() == nil {
		ts, err := registry.List(ctx, s.pool, registry.TenantListParams{After: after, Limit: sweepPage,
			Statuses: []registry.Status{registry.StatusActive}})
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "embedding worker: registry sweep failed", slog.String("error", err.Error()))
			}
			return
		}
		now := time.Now()
		for _, t := range ts {
			// Fenced like a request, wherever the tenant lives (a move makes it follow).
			s.queue.addIfAbsent(s.resolver.HandleFor(t).Scope(s.cfg.StatementTimeout), now)
			n++
		}
		if len(ts) < sweepPage {
			break
		}
		after = ts[len(ts)-1].ID
	}
	s.cfg.Logger.DebugContext(ctx, "embedding worker: swept the registry", slog.Int("tenants", n))
}

// process serves due tenants, WorkerConcurrency at a time.
func (s *Service) process(ctx context.Context, due []*queued) {
	sem := make(chan struct{}, s.cfg.WorkerConcurrency)
	var wg sync.WaitGroup
	for _, t := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.processOne(ctx, t)
		})
	}
	wg.Wait()
}

// processOne embeds one tenant's due jobs and decides when to look at it again.
func (s *Service) processOne(ctx context.Context, t *queued) {
	st, err := s.engine.EmbeddingStats(ctx, t.scope)
	if err != nil {
		// A placement that is down or disabled is logged by the pools, once for all its tenants;
		// the next sweep brings its tenants back.
		if ctx.Err() == nil && !errors.Is(err, placement.ErrUnavailable) {
			// Deleted tenants end up here (their schema is gone); the sweep finds the living.
			s.cfg.Logger.WarnContext(ctx, "embedding worker: cannot read the queue", slog.String("tenant_id", t.scope.OwnerID),
				slog.String("error", err.Error()))
		}
		return
	}
	if st.Pending == 0 {
		return
	}
	n, err := s.worker.ProcessScope(ctx, t.scope)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		s.cfg.Logger.WarnContext(ctx, "embedding worker failed", slog.String("tenant_id", t.scope.OwnerID),
			slog.String("error", err.Error()))
	}
	if n > 0 {
		s.cfg.Logger.InfoContext(ctx, "embedding worker: embedded queued chunks", slog.String("tenant_id", t.scope.OwnerID),
			slog.Int("chunks", n))
		t.next, t.idle = time.Now(), 0
	} else {
		delay := s.cfg.WorkerInterval << min(t.idle, 20)
		t.next, t.idle = time.Now().Add(min(delay, s.cfg.SweepInterval)), t.idle+1
	}
	s.queue.requeue(t)
}
