package memory_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// workRow is a tenant's row in the work queue, read as the superuser; ok is false without one.
func workRow(t *testing.T, e *env, s memory.Scope) (due time.Time, generation int64, failures int, ok bool) {
	t.Helper()
	rows, err := e.admin.Query(context.Background(), `SELECT due_at, generation, failures FROM tenantmem_placement.embedding_work
		WHERE schema_name = $1 AND owner_id = $2`, s.Schema, s.OwnerID)
	require.NoError(t, err)
	defer rows.Close()
	if !rows.Next() {
		require.NoError(t, rows.Err())
		return time.Time{}, 0, 0, false
	}
	require.NoError(t, rows.Scan(&due, &generation, &failures))
	return due, generation, failures, true
}

// TestWorkQueueFollowsIngest: in both tiers, an ingest that queues jobs lists its tenant (and
// only its tenant) in the work queue; claiming pushes the due time out; settling after the work
// removes the row, or reschedules it at the next due job while jobs are in backoff; an ingest
// that raced with the worker keeps the row.
func TestWorkQueueFollowsIngest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p, func(c *memory.WorkerConfig) { c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour })
	q := memory.NewWorkQueue(e.router)
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s, other := e.tenant(t, tier), e.tenant(t, tier)
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "embedded at once"})
			require.NoError(t, err)
			_, _, _, ok := workRow(t, e, s)
			require.False(t, ok, "an ingest that embedded everything lists nothing")

			p.setDown(true)
			_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "b", DocumentType: "text", Content: "queued"})
			require.NoError(t, err)
			p.setDown(false)
			due, gen, _, ok := workRow(t, e, s)
			require.True(t, ok)
			require.WithinDuration(t, time.Now(), due, time.Minute)
			_, _, _, ok = workRow(t, e, other)
			require.False(t, ok, "another tenant is not listed")

			items := claimOwner(t, q, s.OwnerID)
			require.Len(t, items, 1)
			require.Equal(t, memory.WorkItem{Schema: s.Schema, OwnerID: s.OwnerID, Generation: gen}, items[0])
			due, _, _, _ = workRow(t, e, s)
			require.Greater(t, time.Until(due), 20*time.Second, "a claim pushes the due time out by the lease")
			require.Empty(t, claimOwner(t, q, s.OwnerID), "a claimed tenant is not claimed twice")

			// Another ingest while the worker holds the claim: the worker must keep the row.
			p.setDown(true)
			_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "c", DocumentType: "text", Content: "queued later"})
			require.NoError(t, err)
			p.setDown(false)
			_, err = e.admin.Exec(ctx, `DELETE FROM `+s.Schema+`.embedding_jobs WHERE owner_id = $1`, s.OwnerID)
			require.NoError(t, err)
			require.NoError(t, q.Settle(ctx, s, items[0]))
			_, gen2, _, ok := workRow(t, e, s)
			require.True(t, ok, "the raced ingest keeps the row")
			require.Equal(t, gen+1, gen2)

			// Jobs in backoff: the row waits for the next attempt.
			p.setDown(true)
			_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text", Content: "in backoff"})
			require.NoError(t, err)
			items = claimOwner(t, q, s.OwnerID)
			require.Len(t, items, 1)
			n, err := w.ProcessScope(ctx, s)
			require.NoError(t, err)
			require.Zero(t, n)
			require.NoError(t, q.Settle(ctx, s, items[0]))
			due, _, _, ok = workRow(t, e, s)
			require.True(t, ok)
			require.Greater(t, time.Until(due), 25*time.Minute, "due at the job's next attempt")

			// Done: the row goes.
			p.setDown(false)
			_, err = e.admin.Exec(ctx, `UPDATE `+s.Schema+`.embedding_jobs SET next_attempt_at = now() WHERE owner_id = $1`, s.OwnerID)
			require.NoError(t, err)
			_, err = e.admin.Exec(ctx, `UPDATE tenantmem_placement.embedding_work SET due_at = now() WHERE owner_id = $1`, s.OwnerID)
			require.NoError(t, err)
			items = claimOwner(t, q, s.OwnerID)
			require.Len(t, items, 1)
			n, err = w.ProcessScope(ctx, s)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.NoError(t, q.Settle(ctx, s, items[0]))
			_, _, _, ok = workRow(t, e, s)
			require.False(t, ok)

			require.Error(t, q.Settle(ctx, other, items[0]), "a tenant's scope never settles another tenant's row")
		})
	}
}

// claimOwner claims due tenants until it has seen owner's row (other tests' tenants share no
// database with this one, but a subtest's sibling may be due too) and puts the others back.
func claimOwner(t *testing.T, q *memory.WorkQueue, owner string) []memory.WorkItem {
	t.Helper()
	ctx := context.Background()
	items, err := q.Claim(ctx, 100, memory.DefaultWorkerLease)
	require.NoError(t, err)
	var mine []memory.WorkItem
	for _, it := range items {
		if it.OwnerID == owner {
			mine = append(mine, it)
		} else {
			require.NoError(t, q.Defer(ctx, it, 0, false))
		}
	}
	return mine
}

// TestWorkQueueDeferAndReconcile: a failed look is counted and backs off; a row lost (or never
// written) is found again by Reconcile, which lists nothing for a tenant without jobs.
func TestWorkQueueDeferAndReconcile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	q := memory.NewWorkQueue(e.router)
	s, idle := e.tenant(t, registry.TierSchema), e.tenant(t, registry.TierShared)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "queued"})
	require.NoError(t, err)
	items := claimOwner(t, q, s.OwnerID)
	require.Len(t, items, 1)
	require.NoError(t, q.Defer(ctx, items[0], time.Hour, true))
	due, _, failures, ok := workRow(t, e, s)
	require.True(t, ok)
	require.Equal(t, 1, failures)
	require.Greater(t, time.Until(due), 59*time.Minute)

	_, err = e.admin.Exec(ctx, `DELETE FROM tenantmem_placement.embedding_work`)
	require.NoError(t, err)
	listed, err := memory.ReconcileWork(ctx, s)
	require.NoError(t, err)
	require.True(t, listed)
	listed, err = memory.ReconcileWork(ctx, s)
	require.NoError(t, err)
	require.False(t, listed, "already listed")
	listed, err = memory.ReconcileWork(ctx, idle)
	require.NoError(t, err)
	require.False(t, listed)
	_, _, _, ok = workRow(t, e, idle)
	require.False(t, ok)
	at, ok, err := q.Earliest(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.WithinDuration(t, time.Now(), at, time.Minute)
}

// slowProvider takes its time, then embeds.
type slowProvider struct {
	embed.Provider
	delay time.Duration
	calls atomic.Int64
}

func (p *slowProvider) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	p.calls.Add(1)
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.Provider.Embed(ctx, texts)
}

// TestWorkerRenewsItsLease: a provider call much longer than the lease keeps its jobs (the
// worker renews the lease while it waits), so a second worker claims nothing and the provider
// embeds each chunk once. Before the heartbeat, the second worker reclaimed the jobs after one
// lease and both embedded them.
func TestWorkerRenewsItsLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	s := e.tenant(t, registry.TierShared)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "slow"})
	require.NoError(t, err)
	// Three leases long. A renewal (every Lease/3) may be up to 2/3 of a lease late before the
	// second worker could take the job: at 300 ms that was 200 ms, less than a loaded CI's stalls.
	slow := &slowProvider{Provider: newBuiltin(t), delay: 3 * time.Second}
	lease := func(c *memory.WorkerConfig) { c.Lease = time.Second }
	first, second := newWorker(t, slow, lease), newWorker(t, p, lease)
	done := make(chan int, 1)
	go func() {
		n, err := first.ProcessScope(ctx, s)
		require.NoError(t, err)
		done <- n
	}()
	calls := p.calls.Load()
	deadline := time.After(slow.delay + 10*time.Second)
	for waiting := true; waiting; {
		select {
		case n := <-done:
			require.Equal(t, 1, n)
			waiting = false
		case <-deadline:
			t.Fatal("the slow worker did not finish")
		case <-time.After(50 * time.Millisecond):
			n, err := second.ProcessScope(ctx, s)
			require.NoError(t, err)
			require.Zero(t, n, "the job is still leased to the slow worker")
		}
	}
	require.EqualValues(t, calls, p.calls.Load(), "the second worker never called the provider")
	require.EqualValues(t, 1, slow.calls.Load())
}

// TestDefaultLeaseIsShort: with the default configuration, a claimed job's lease ends within a
// minute, so the jobs of a router killed mid-call are free again within a minute (it was 5
// minutes: issue 9).
func TestDefaultLeaseIsShort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	s := e.tenant(t, registry.TierSchema)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "claimed"})
	require.NoError(t, err)
	blocking := &blockingProvider{Provider: newBuiltin(t), started: make(chan struct{}, 1)}
	w, err := memory.NewWorker(memory.WorkerConfig{Embedder: blocking})
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := w.ProcessScope(wctx, s); errc <- err }()
	<-blocking.started
	var left time.Duration
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT extract(epoch FROM locked_until - now()) * interval '1 second'
		FROM `+s.Schema+`.embedding_jobs`).Scan(&left))
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Positive(t, left)
	require.LessOrEqual(t, left, time.Minute)
}
