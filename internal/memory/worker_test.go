package memory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// flakyProvider wraps a provider and fails on demand: the next n calls, every call while down,
// or any call containing a poison word (permanently, like a 400).
type flakyProvider struct {
	embed.Provider
	mu     sync.Mutex
	failN  int
	down   bool
	poison string
	calls  atomic.Int64
}

func (f *flakyProvider) failNext(n int) { f.mu.Lock(); f.failN = n; f.mu.Unlock() }
func (f *flakyProvider) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func (f *flakyProvider) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	f.calls.Add(1)
	f.mu.Lock()
	fail := f.down || f.failN > 0
	if f.failN > 0 {
		f.failN--
	}
	poison := f.poison
	f.mu.Unlock()
	if fail {
		return nil, &embed.APIError{StatusCode: 503, Message: "down for maintenance"}
	}
	if poison != "" {
		for _, t := range texts {
			if strings.Contains(t, poison) {
				return nil, &embed.APIError{StatusCode: 400, Message: "input rejected"}
			}
		}
	}
	return f.Provider.Embed(ctx, texts)
}

func newWorker(t testing.TB, p embed.Provider, mods ...func(*memory.WorkerConfig)) *memory.Worker {
	t.Helper()
	cfg := memory.WorkerConfig{Embedder: p, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Logger: testLogger(t)}
	for _, m := range mods {
		m(&cfg)
	}
	w, err := memory.NewWorker(cfg)
	require.NoError(t, err)
	return w
}

func TestAPIErrorSentinels(t *testing.T) {
	t.Parallel()
	require.True(t, embed.IsTransient(&embed.APIError{StatusCode: 503}))
	require.False(t, embed.IsTransient(&embed.APIError{StatusCode: 400}))
}

// TestProviderFailureThenRecovery: the provider is down at ingest; the document is stored and
// found by text search, its chunks wait in the queue, vector search cannot see them yet, hybrid
// search degrades to text; when the provider is back the worker embeds them and vector search
// finds them.
func TestProviderFailureThenRecovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p, func(c *memory.WorkerConfig) { c.BatchSize = 3 })
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			p.setDown(true)
			add, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "manual", DocumentType: "text",
				Content: longText("turbine", 1200)})
			require.NoError(t, err)
			require.Zero(t, add.EmbeddingsCreated)
			leaves := add.EmbeddingsPending
			require.Greater(t, leaves, 3, "several leaves, several worker batches")

			st, err := eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, leaves, st.EmbeddingsPending)
			res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "turbine", SearchType: memory.SearchText})
			require.NoError(t, err)
			require.NotEmpty(t, res.Results, "searchable by text at once")
			res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "turbine", SearchType: memory.SearchHybrid})
			require.NoError(t, err)
			require.True(t, res.Degraded)
			require.NotEmpty(t, res.Results)
			for _, r := range res.Results {
				require.Nil(t, r.Similarity)
			}
			_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "turbine", SearchType: memory.SearchVector})
			require.ErrorIs(t, err, memory.ErrEmbeddingUnavailable)
			q, err := p.Provider.Embed(ctx, []string{"turbine"})
			require.NoError(t, err)
			res, err = eng.Search(ctx, s, memory.SearchParams{QueryEmbedding: q[0], SearchType: memory.SearchVector})
			require.NoError(t, err)
			require.Empty(t, res.Results, "nothing embedded yet")

			// Still down: the worker records the failure and backs off.
			n, err := w.ProcessScope(ctx, s)
			require.NoError(t, err)
			require.Zero(t, n)
			qs, err := eng.EmbeddingStats(ctx, s)
			require.NoError(t, err)
			require.Equal(t, memory.EmbeddingQueueStats{Pending: leaves}, qs)

			p.setDown(false)
			total := 0
			waitFor(t, 10*time.Second, "the queue to drain", func() bool {
				n, err := w.ProcessScope(ctx, s)
				require.NoError(t, err)
				total += n
				qs, err := eng.EmbeddingStats(ctx, s)
				require.NoError(t, err)
				return qs.Pending == 0
			})
			require.Equal(t, leaves, total)
			d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: add.DocumentID, IncludeChunks: true})
			require.NoError(t, err)
			for _, c := range d.Chunks {
				require.Equal(t, c.ChunkLevel == 0, c.HasEmbedding, "leaves embedded, parents not")
			}
			res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "turbine", SearchType: memory.SearchVector})
			require.NoError(t, err)
			requireAllButNested(t, eng, s, res.Results, []string{add.DocumentID})
			require.NotNil(t, res.Results[0].Similarity)
		})
	}
}

// TestWorkerFailsJobsOnlyOnPermanentErrors: a provider outage, however many attempts it spans,
// never fails a job (issue 9: a few minutes of outage used to exhaust MaxAttempts and fail the
// jobs for good); the job is embedded once the provider is back. A permanent rejection fails the
// job at once, and RetryFailedEmbeddings queues it again.
func TestWorkerFailsJobsOnlyOnPermanentErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p)
	s := e.tenant(t, registry.TierShared)
	p.setDown(true)
	add, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "x", DocumentType: "text", Content: "one chunk"})
	require.NoError(t, err)
	require.Equal(t, 1, add.EmbeddingsPending)

	before := p.calls.Load()
	waitFor(t, 20*time.Second, "20 failed attempts", func() bool {
		_, err := w.ProcessScope(ctx, s)
		require.NoError(t, err)
		qs, err := eng.EmbeddingStats(ctx, s)
		require.NoError(t, err)
		require.Equal(t, memory.EmbeddingQueueStats{Pending: 1}, qs, "an outage never fails a job")
		return p.calls.Load()-before >= 20
	})
	p.setDown(false)
	waitFor(t, 10*time.Second, "the job to be embedded after the outage", func() bool {
		n, err := w.ProcessScope(ctx, s)
		require.NoError(t, err)
		return n == 1
	})

	// A permanent error fails the job with one call.
	p.mu.Lock()
	p.poison = "POISONWORD"
	p.mu.Unlock()
	p.setDown(true)
	_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "y", DocumentType: "text", Content: "POISONWORD here"})
	require.NoError(t, err)
	p.setDown(false)
	before = p.calls.Load()
	n, err := w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n)
	require.EqualValues(t, 1, p.calls.Load()-before)
	st, err := eng.Statistics(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, st.EmbeddingsFailed)
	require.Zero(t, st.EmbeddingsPending)
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n, "failed jobs are not retried by themselves")

	p.mu.Lock()
	p.poison = ""
	p.mu.Unlock()
	requeued, err := eng.RetryFailedEmbeddings(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, requeued)
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	qs, err := eng.EmbeddingStats(ctx, s)
	require.NoError(t, err)
	require.Equal(t, memory.EmbeddingQueueStats{}, qs)
}

// TestWorkerBacksOff: after a transient failure a job is not due again before its backoff.
func TestWorkerBacksOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p, func(c *memory.WorkerConfig) { c.MinBackoff, c.MaxBackoff = time.Hour, 2*time.Hour })
	s := e.tenant(t, registry.TierSchema)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "x", DocumentType: "text", Content: "one chunk"})
	require.NoError(t, err)
	p.setDown(false)
	p.failNext(1)
	calls := p.calls.Load()
	n, err := w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n, "not due before its backoff")
	require.EqualValues(t, 1, p.calls.Load()-calls)
	var wait time.Duration
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT extract(epoch FROM next_attempt_at - now()) * interval '1 second' FROM `+
		s.Schema+`.embedding_jobs`).Scan(&wait))
	require.Greater(t, wait, 29*time.Minute, "a random backoff in [MinBackoff/2, MinBackoff]")
	require.LessOrEqual(t, wait, time.Hour)
}

// TestWorkerIsolatesPoisonChunk: a permanent rejection of a batch is retried text by text, so
// only the offending chunk fails.
func TestWorkerIsolatesPoisonChunk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p)
	s := e.tenant(t, registry.TierShared)
	p.setDown(true)
	add, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "x", DocumentType: "text",
		Content: longText("fine", 900) + " POISONWORD. " + longText("fine", 900)})
	require.NoError(t, err)
	p.setDown(false)
	p.mu.Lock()
	p.poison = "POISONWORD"
	p.mu.Unlock()
	n, err := w.ProcessScope(ctx, s)
	require.NoError(t, err)
	qs, err := eng.EmbeddingStats(ctx, s)
	require.NoError(t, err)
	require.Positive(t, qs.Failed)
	require.Equal(t, add.EmbeddingsPending, n+qs.Failed)
	require.Zero(t, qs.Pending)
	require.Less(t, qs.Failed, add.EmbeddingsPending)
}

// TestWorkerReclaimsExpiredLease: a job claimed by a worker that died (its lease expired) is
// claimed again; one whose lease expired MaxLeaseExpiries times is failed.
func TestWorkerReclaimsExpiredLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p, func(c *memory.WorkerConfig) { c.MaxLeaseExpiries = 2 })
	s := e.tenant(t, registry.TierSchema)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "first"})
	require.NoError(t, err)
	_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "b", DocumentType: "text", Content: "second"})
	require.NoError(t, err)
	p.setDown(false)
	jobs := s.Schema + ".embedding_jobs"
	// A dead worker holds both; the lease of one is still running.
	_, err = e.admin.Exec(ctx, `UPDATE `+jobs+` SET status = 'running', attempts = 9, locked_until = now() + interval '1 hour'`)
	require.NoError(t, err)
	n, err := w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Zero(t, n, "leased jobs are left alone")
	// The leases expire: one job's lease had expired once before, the other's never. Many
	// attempts (an outage) do not count.
	_, err = e.admin.Exec(ctx, `UPDATE `+jobs+` j SET locked_until = now() - interval '1 second',
		lease_expiries = CASE WHEN c.content = 'first' THEN 0 ELSE 1 END FROM `+s.Schema+`.chunks c WHERE c.chunk_id = j.chunk_id`)
	require.NoError(t, err)
	n, err = w.ProcessScope(ctx, s)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	qs, err := eng.EmbeddingStats(ctx, s)
	require.NoError(t, err)
	require.Equal(t, memory.EmbeddingQueueStats{Failed: 1}, qs)
	var lastError string
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT last_error FROM `+jobs).Scan(&lastError))
	require.Contains(t, lastError, "its worker stopped while embedding it 2 times")
}

// TestWorkerReleasesClaimOnCancel: a worker stopped mid-call gives its jobs back at once.
func TestWorkerReleasesClaimOnCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	blocking := &blockingProvider{Provider: newBuiltin(t), started: make(chan struct{}, 1)}
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	s := e.tenant(t, registry.TierShared)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "first"})
	require.NoError(t, err)
	w := newWorker(t, blocking)
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := w.ProcessScope(wctx, s); errc <- err }()
	<-blocking.started
	var status string
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT status FROM tenantmem_shared.embedding_jobs WHERE owner_id = $1`, s.OwnerID).Scan(&status))
	require.Equal(t, "running", status)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	var attempts int
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT status, attempts FROM tenantmem_shared.embedding_jobs WHERE owner_id = $1`,
		s.OwnerID).Scan(&status, &attempts))
	require.Equal(t, "pending", status)
	require.Zero(t, attempts)
}

type blockingProvider struct {
	embed.Provider
	started chan struct{}
}

func (b *blockingProvider) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestWorkerRun: the loop drains the queues of the scopes its source returns and stops with
// its context.
func TestWorkerRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	w := newWorker(t, p)
	scopes := []memory.Scope{e.tenant(t, registry.TierShared), e.tenant(t, registry.TierSchema)}
	p.setDown(true)
	for i, s := range scopes {
		_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: fmt.Sprint("doc ", i)})
		require.NoError(t, err)
	}
	p.setDown(false)
	rctx, cancel := context.WithCancel(ctx)
	var sourceErr atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- w.Run(rctx, func(ctx context.Context) ([]memory.Scope, error) {
			if sourceErr.CompareAndSwap(false, true) {
				return nil, errors.New("registry unavailable") // logged, the loop goes on
			}
			return scopes, nil
		}, time.Millisecond)
	}()
	waitFor(t, 10*time.Second, "both queues to drain", func() bool {
		for _, s := range scopes {
			qs, err := eng.EmbeddingStats(ctx, s)
			require.NoError(t, err)
			if qs.Pending > 0 {
				return false
			}
		}
		return true
	})
	cancel()
	require.NoError(t, <-done)
}

// gatedFailProvider fails each call, but only once the test lets it.
type gatedFailProvider struct {
	embed.Provider
	started, release chan struct{}
}

func (g *gatedFailProvider) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	g.started <- struct{}{}
	<-g.release
	return nil, errors.Join(embed.ErrUnavailable, errors.New("test: provider down"))
}

// TestWorkerThatLostItsLeaseLeavesTheJobAlone: a worker whose provider call outlived its lease
// (another worker reclaimed the job meanwhile) must not reschedule the job it no longer holds.
func TestWorkerThatLostItsLeaseLeavesTheJobAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	s := e.tenant(t, registry.TierShared)
	p.setDown(true)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "first"})
	require.NoError(t, err)
	g := &gatedFailProvider{Provider: newBuiltin(t), started: make(chan struct{}, 1), release: make(chan struct{})}
	w := newWorker(t, g)
	done := make(chan error, 1)
	go func() { _, err := w.ProcessScope(ctx, s); done <- err }()
	<-g.started
	// Meanwhile the lease expired and another worker claimed the job (attempt 2, new lease).
	_, err = e.admin.Exec(ctx, `UPDATE tenantmem_shared.embedding_jobs SET attempts = attempts + 1,
		locked_until = now() + interval '1 hour' WHERE owner_id = $1`, s.OwnerID)
	require.NoError(t, err)
	close(g.release)
	require.NoError(t, <-done)
	var status string
	var attempts int
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT status, attempts FROM tenantmem_shared.embedding_jobs
		WHERE owner_id = $1`, s.OwnerID).Scan(&status, &attempts))
	require.Equal(t, "running", status, "the other worker's lease stands")
	require.Equal(t, 2, attempts)
}
