package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"

	"github.com/tenantmem/tenantmem/internal/embed"
)

// Defaults of [WorkerConfig], applied by [WorkerConfig.WithDefaults].
const (
	DefaultWorkerBatchSize        = 64
	DefaultWorkerMaxBatches       = 10
	DefaultWorkerMaxLeaseExpiries = 3
	DefaultWorkerLease            = 30 * time.Second
	DefaultWorkerMinBackoff       = 5 * time.Second
	DefaultWorkerMaxBackoff       = 5 * time.Minute
)

// WorkerConfig configures a [Worker]. Zero values mean the documented default.
type WorkerConfig struct {
	// Embedder computes the vectors; it must be the engine's provider (same name and dimension).
	Embedder embed.Provider
	// BatchSize is how many jobs are claimed, and embedded in one provider call, at a time.
	// Default 64.
	BatchSize int
	// MaxBatches bounds the batches of one ProcessScope call, so one tenant with a large backlog
	// cannot starve the others. Default 10.
	MaxBatches int
	// MaxLeaseExpiries is how many times a job's lease may expire (its worker died or hung with
	// the job in hand) before the job is marked failed, so that a chunk that kills its worker
	// does not do so forever. Provider failures never fail a job unless the provider calls them
	// permanent (a rejected input): an outage, however long, only delays it. Default 3.
	MaxLeaseExpiries int
	// Lease is how long a claimed job stays reserved without news from its worker. The worker
	// renews it every Lease/3 while the provider call runs, so a slow call keeps its jobs and a
	// killed worker's jobs are free again within Lease. Default 30s.
	Lease time.Duration
	// MinBackoff and MaxBackoff bound the pause after a transient failure: attempt n waits a
	// random duration in [d/2, d] with d = min(MinBackoff·2^(n-1), MaxBackoff), and at least the
	// provider's Retry-After. Defaults 5s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives one line per failed batch. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with unset fields replaced by their defaults.
func (c WorkerConfig) WithDefaults() WorkerConfig {
	c.BatchSize = cmp.Or(c.BatchSize, DefaultWorkerBatchSize)
	c.MaxBatches = cmp.Or(c.MaxBatches, DefaultWorkerMaxBatches)
	c.MaxLeaseExpiries = cmp.Or(c.MaxLeaseExpiries, DefaultWorkerMaxLeaseExpiries)
	c.Lease = cmp.Or(c.Lease, DefaultWorkerLease)
	c.MinBackoff = cmp.Or(c.MinBackoff, DefaultWorkerMinBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultWorkerMaxBackoff)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c WorkerConfig) validate() error {
	switch {
	case c.Embedder == nil:
		return errors.New("memory: WorkerConfig.Embedder is required")
	case c.BatchSize < 1 || c.BatchSize > 2048:
		return fmt.Errorf("memory: WorkerConfig.BatchSize must be in [1, 2048], got %d", c.BatchSize)
	case c.MaxBatches < 1:
		return fmt.Errorf("memory: WorkerConfig.MaxBatches must be positive, got %d", c.MaxBatches)
	case c.MaxLeaseExpiries < 1:
		return fmt.Errorf("memory: WorkerConfig.MaxLeaseExpiries must be positive, got %d", c.MaxLeaseExpiries)
	case c.Lease < 3*time.Millisecond:
		return fmt.Errorf("memory: WorkerConfig.Lease must be at least 3ms, got %s", c.Lease)
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("memory: WorkerConfig backoff must satisfy 0 < MinBackoff <= MaxBackoff, got %s and %s",
			c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Worker embeds the chunks that were queued when the provider failed at ingest. Jobs are
// claimed with FOR UPDATE SKIP LOCKED and a lease, embedded outside any transaction, then
// written and deleted in a second transaction, so any number of workers (in any number of
// processes) can share the queue. A Worker is safe for concurrent use.
type Worker struct {
	cfg WorkerConfig
}

// NewWorker validates cfg (after defaults) and returns a Worker.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg}, nil
}

// job is one claimed embedding job.
type job struct {
	chunkID  string
	attempts int
	content  string
}

// outcome of one job after the provider call.
type outcome struct {
	vec        []float32 // success when non-nil
	err        error
	permanent  bool
	retryAfter time.Duration
}

// ProcessScope embeds the due jobs of one tenant, batch by batch, until none is due or
// MaxBatches batches were handled, and returns how many chunks it embedded. Provider failures
// are not errors of ProcessScope: they are recorded on the jobs (backoff, or failed on a
// permanent error). It returns an error only for database failures or when ctx ends; jobs
// claimed at that moment are released at once.
func (w *Worker) ProcessScope(ctx context.Context, s Scope) (int, error) {
	done := 0
	for range w.cfg.MaxBatches {
		jobs, err := w.claim(ctx, s)
		if err != nil {
			return done, err
		}
		if len(jobs) == 0 {
			return done, nil
		}
		outcomes := w.embedLeased(ctx, s, jobs)
		if ctx.Err() != nil {
			w.release(ctx, s, jobs)
			return done, ctx.Err()
		}
		n, err := w.record(ctx, s, jobs, outcomes)
		done += n
		if err != nil {
			return done, err
		}
		if len(jobs) < w.cfg.BatchSize {
			return done, nil
		}
	}
	return done, nil
}

func (w *Worker) claim(ctx context.Context, s Scope) ([]job, error) {
	var jobs []job
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		// A job whose lease expired too often (its worker died with it in hand every time) is
		// given up rather than reclaimed forever.
		if _, err := tx.Exec(ctx, `
			UPDATE embedding_jobs SET status = 'failed', locked_until = NULL, updated_at = now(),
				lease_expiries = coalesce(lease_expiries, 0) + 1,
				last_error = coalesce(last_error || '; ', '') || 'its worker stopped while embedding it ' ||
					(coalesce(lease_expiries, 0) + 1) || ' times'
			WHERE owner_id = $1 AND status = 'running' AND locked_until <= now() AND coalesce(lease_expiries, 0) + 1 >= $2`,
			s.OwnerID, w.cfg.MaxLeaseExpiries); err != nil {
			return fmt.Errorf("memory: expire jobs: %w", err)
		}
		rows, err := tx.Query(ctx, `
			WITH due AS (
				SELECT chunk_id FROM embedding_jobs
				WHERE owner_id = $1
				  AND ((status = 'pending' AND next_attempt_at <= now()) OR (status = 'running' AND locked_until <= now()))
				ORDER BY next_attempt_at
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			)
			UPDATE embedding_jobs j
			SET status = 'running', attempts = j.attempts + 1, updated_at = now(),
				lease_expiries = coalesce(j.lease_expiries, 0) + (j.status = 'running')::int,
				locked_until = now() + make_interval(secs => $3)
			FROM due, chunks c
			WHERE j.chunk_id = due.chunk_id AND j.owner_id = $1 AND c.chunk_id = j.chunk_id AND c.owner_id = $1
			RETURNING j.chunk_id::text, j.attempts, c.content`,
			s.OwnerID, w.cfg.BatchSize, w.cfg.Lease.Seconds())
		if err != nil {
			return fmt.Errorf("memory: claim jobs: %w", err)
		}
		jobs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (job, error) {
			var j job
			err := r.Scan(&j.chunkID, &j.attempts, &j.content)
			return j, err
		})
		if err != nil {
			return fmt.Errorf("memory: claim jobs: %w", err)
		}
		return nil
	})
	return jobs, err
}

// embedLeased is embedJobs while renewing the jobs' lease every Lease/3, so a provider call
// longer than the lease keeps its jobs, and a killed worker's jobs are free within one lease.
func (w *Worker) embedLeased(ctx context.Context, s Scope, jobs []job) []outcome {
	ids, attempts := jobKeys(jobs)
	hctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			err := s.InTx(hctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(hctx, `UPDATE embedding_jobs SET locked_until = now() + make_interval(secs => $4)
					WHERE owner_id = $1 AND status = 'running'
					  AND (chunk_id, attempts) IN (SELECT * FROM unnest($2::uuid[], $3::int[]))`,
					s.OwnerID, ids, attempts, w.cfg.Lease.Seconds())
				return err
			})
			if err != nil && hctx.Err() == nil {
				w.cfg.Logger.WarnContext(ctx, "memory: renewing the lease of embedding jobs failed",
					slog.String("owner_id", s.OwnerID), slog.String("error", err.Error()))
			}
		}
	})
	out := w.embedJobs(ctx, jobs)
	stop()
	wg.Wait()
	return out
}

func jobKeys(jobs []job) ([]string, []int32) {
	ids := make([]string, len(jobs))
	attempts := make([]int32, len(jobs))
	for i, j := range jobs {
		ids[i], attempts[i] = j.chunkID, int32(j.attempts)
	}
	return ids, attempts
}

// embedJobs calls the provider once for the batch. When the batch is rejected permanently by
// the provider (one bad text fails a whole request), each text is retried alone so that one
// poison chunk does not fail its neighbours.
func (w *Worker) embedJobs(ctx context.Context, jobs []job) []outcome {
	texts := make([]string, len(jobs))
	for i, j := range jobs {
		texts[i] = j.content
	}
	out := make([]outcome, len(jobs))
	vecs, err := w.embed(ctx, texts)
	if err == nil {
		for i := range out {
			out[i].vec = vecs[i]
		}
		return out
	}
	if len(jobs) > 1 && errors.Is(err, embed.ErrProvider) && ctx.Err() == nil {
		for i, t := range texts {
			v, err := w.embed(ctx, []string{t})
			if err != nil {
				out[i] = failure(err)
			} else {
				out[i].vec = v[0]
			}
		}
		return out
	}
	f := failure(err)
	for i := range out {
		out[i] = f
	}
	return out
}

func (w *Worker) embed(ctx context.Context, texts []string) ([][]float32, error) {
	vecs, err := w.cfg.Embedder.Embed(ctx, texts)
	if err != nil {
		return nil, err
	}
	if err := checkVectors(vecs, len(texts), w.cfg.Embedder.Dimension()); err != nil {
		return nil, err
	}
	return vecs, nil
}

func failure(err error) outcome {
	return outcome{err: err, permanent: !embed.IsTransient(err), retryAfter: embed.RetryAfterOf(err)}
}

// record writes the vectors of the successful jobs and deletes those jobs, and reschedules or
// fails the others, in one transaction.
func (w *Worker) record(ctx context.Context, s Scope, jobs []job, outcomes []outcome) (int, error) {
	var (
		okIDs   []string
		okVecs  []pgvector.Vector
		failIDs []string
		failAtt []int32 // the attempt each failed job was claimed at: its lease
		failErr []string
		perm    []bool
		after   []float64
	)
	for i, o := range outcomes {
		if o.vec != nil {
			okIDs = append(okIDs, jobs[i].chunkID)
			okVecs = append(okVecs, pgvector.NewVector(o.vec))
			continue
		}
		failIDs = append(failIDs, jobs[i].chunkID)
		failAtt = append(failAtt, int32(jobs[i].attempts))
		failErr = append(failErr, truncate(o.err.Error(), 1000))
		perm = append(perm, o.permanent)
		after = append(after, o.retryAfter.Seconds())
	}
	if len(failIDs) > 0 {
		w.cfg.Logger.WarnContext(ctx, "memory: embedding jobs failed", slog.String("owner_id", s.OwnerID),
			slog.Int("jobs", len(failIDs)), slog.Bool("permanent", perm[0]), slog.String("error", failErr[0]))
	}
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if len(okIDs) > 0 {
			if _, err := tx.Exec(ctx, `
				UPDATE chunks c SET embedding = u.embedding
				FROM unnest($2::uuid[], $3::vector[]) AS u(id, embedding)
				WHERE c.owner_id = $1 AND c.chunk_id = u.id`, s.OwnerID, okIDs, okVecs); err != nil {
				return fmt.Errorf("memory: write embeddings: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM embedding_jobs WHERE owner_id = $1 AND chunk_id = ANY($2::uuid[])`,
				s.OwnerID, okIDs); err != nil {
				return fmt.Errorf("memory: delete finished jobs: %w", err)
			}
		}
		if len(failIDs) > 0 {
			// Backoff: a random duration in [d/2, d], d = min(min·2^(attempts-1), max), at least
			// Retry-After. Only a permanent error fails a job: a transient one (an outage, a
			// rate limit) never uses up anything.
			if _, err := tx.Exec(ctx, `
				UPDATE embedding_jobs j SET
					status = CASE WHEN u.permanent THEN 'failed' ELSE 'pending' END,
					locked_until = NULL,
					last_error = u.error,
					updated_at = now(),
					next_attempt_at = now() + make_interval(secs => greatest(u.retry_after,
						least($4::float8, $3::float8 * power(2, least(j.attempts - 1, 30))) * (0.5 + random() / 2)))
				FROM unnest($2::uuid[], $5::text[], $6::bool[], $7::float8[], $8::int[]) AS u(id, error, permanent, retry_after, attempt)
				-- Only while this worker still holds the lease: a job reclaimed by another worker
				-- (its attempts grew) is that worker's to reschedule.
				WHERE j.owner_id = $1 AND j.chunk_id = u.id AND j.status = 'running' AND j.attempts = u.attempt`,
				s.OwnerID, failIDs, w.cfg.MinBackoff.Seconds(), w.cfg.MaxBackoff.Seconds(),
				failErr, perm, after, failAtt); err != nil {
				return fmt.Errorf("memory: reschedule jobs: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(okIDs), nil
}

// release gives claimed jobs back when the worker stops mid-batch, without counting the
// attempt. If it fails, the lease expires and the jobs are reclaimed anyway.
func (w *Worker) release(ctx context.Context, s Scope, jobs []job) {
	ids, attempts := jobKeys(jobs)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			UPDATE embedding_jobs SET status = 'pending', locked_until = NULL, attempts = greatest(attempts - 1, 0),
				next_attempt_at = now(), updated_at = now()
			WHERE owner_id = $1 AND status = 'running'
			  AND (chunk_id, attempts) IN (SELECT * FROM unnest($2::uuid[], $3::int[]))`, s.OwnerID, ids, attempts)
		return err
	})
	if err != nil {
		w.cfg.Logger.WarnContext(ctx, "memory: releasing claimed jobs failed; their lease will expire",
			slog.String("owner_id", s.OwnerID), slog.String("error", err.Error()))
	}
}

// Run processes the scopes that source returns, over and over, until ctx ends, and returns
// nil then. After a round that embedded nothing it waits interval before asking source again;
// after a round that did work it goes on at once. Errors of source or of one scope are logged
// and do not stop the loop. Finding the tenants that have queued work is source's job.
func (w *Worker) Run(ctx context.Context, source func(context.Context) ([]Scope, error), interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("memory: Worker.Run interval must be positive, got %s", interval)
	}
	for {
		worked := 0
		scopes, err := source(ctx)
		if err != nil && ctx.Err() == nil {
			w.cfg.Logger.ErrorContext(ctx, "memory: worker source failed", slog.String("error", err.Error()))
		}
		for _, s := range scopes {
			if ctx.Err() != nil {
				break
			}
			n, err := w.ProcessScope(ctx, s)
			worked += n
			if err != nil && ctx.Err() == nil {
				w.cfg.Logger.ErrorContext(ctx, "memory: worker failed on a scope", slog.String("owner_id", s.OwnerID),
					slog.String("error", err.Error()))
			}
		}
		if ctx.Err() != nil {
			return nil //nolint:nilerr // cancellation is the clean stop; scope errors were logged
		}
		if worked > 0 {
			continue
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// EmbeddingQueueStats counts a tenant's queued embeddings.
type EmbeddingQueueStats struct {
	// Pending counts jobs waiting or in progress.
	Pending int `json:"pending"`
	// Failed counts jobs given up on; RetryFailedEmbeddings queues them again.
	Failed int `json:"failed"`
}

// EmbeddingStats counts the tenant's pending and failed embedding jobs.
func (e *Engine) EmbeddingStats(ctx context.Context, s Scope) (EmbeddingQueueStats, error) {
	var st EmbeddingQueueStats
	err := s.inTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status <> 'failed'), count(*) FILTER (WHERE status = 'failed')
			FROM embedding_jobs WHERE owner_id = $1`, s.OwnerID).Scan(&st.Pending, &st.Failed)
	})
	if err != nil {
		return EmbeddingQueueStats{}, fmt.Errorf("memory: embedding stats: %w", err)
	}
	return st, nil
}

// RetryFailedEmbeddings queues the tenant's failed embedding jobs again, with their attempts
// reset, e.g. after a provider misconfiguration was fixed. It returns how many it queued.
func (e *Engine) RetryFailedEmbeddings(ctx context.Context, s Scope) (int, error) {
	var n int64
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE embedding_jobs SET status = 'pending', attempts = 0, lease_expiries = 0,
			next_attempt_at = now(), updated_at = now() WHERE owner_id = $1 AND status = 'failed'`, s.OwnerID)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		return markWork(ctx, tx, s)
	})
	if err != nil {
		return 0, fmt.Errorf("memory: retry failed embeddings: %w", err)
	}
	return int(n), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
