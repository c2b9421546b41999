package memory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/schema"
)

// workTable lists the tenants of one database (placement) that have embedding jobs to do
// (migrations/placement). Queries name it in full: a scope's search_path holds the tenant's
// schema only.
var workTable = pgx.Identifier{schema.PlacementSchema, "embedding_work"}.Sanitize()

// markWork records, inside the transaction that queued embedding jobs for the scope's tenant, that
// the tenant has some, due now. The embedding worker finds it with one index probe, never by
// visiting every tenant. Bumping generation tells a worker that looked at the tenant meanwhile
// not to drop the row.
func markWork(ctx context.Context, tx pgx.Tx, s Scope) error {
	if _, err := tx.Exec(ctx, `INSERT INTO `+workTable+` AS w (schema_name, owner_id) VALUES ($1, $2)
		ON CONFLICT (schema_name, owner_id) DO UPDATE SET due_at = least(w.due_at, now()),
			generation = w.generation + 1, failures = 0, updated_at = now()`, s.Schema, s.OwnerID); err != nil {
		return fmt.Errorf("memory: list the tenant's embedding work: %w", err)
	}
	return nil
}

// nextDueSQL is when the tenant's next job is due: the earliest pending job's next attempt or the
// earliest running job's lease end (NULL when only failed jobs, or none, are left).
const nextDueSQL = `SELECT min(CASE WHEN status = 'pending' THEN next_attempt_at ELSE locked_until END)
	FROM embedding_jobs WHERE owner_id = $1 AND status <> 'failed'`

// WorkItem is one tenant of a [WorkQueue] claimed by a worker.
type WorkItem struct {
	// Schema and OwnerID name the tenant, as ingest recorded them.
	Schema, OwnerID string
	// Generation is the row's generation at the claim: the worker may remove or reschedule the
	// row only while it is unchanged (no ingest queued more work meanwhile).
	Generation int64
	// Failures counts the consecutive looks at the tenant that failed before this one.
	Failures int
}

// WorkQueue is the list of tenants with embedding jobs in one database that holds tenant tables
// (a placement). Ingest adds a tenant in the transaction that queues its jobs; a worker claims
// due tenants (FOR UPDATE SKIP LOCKED, so replicas never look at one tenant at once until a claim
// lapses), runs [Worker.ProcessScope] for each, then settles it: rescheduled at its next due job,
// or removed when it has none left. It is safe for concurrent use.
type WorkQueue struct {
	pool Pool
}

// NewWorkQueue returns the work queue of the database pool reaches, as the router role: the
// control pool, or a placement pool's database (placement.Pools.DB).
func NewWorkQueue(pool Pool) *WorkQueue { return &WorkQueue{pool: pool} }

// conn takes a connection of the queue's database.
func (q *WorkQueue) conn(ctx context.Context) (*pgxpool.Conn, error) {
	c, err := q.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("memory: embedding work: %w", interpretError(err))
	}
	return c, nil
}

// Claim returns up to limit tenants whose work is due, oldest due first, and pushes their due
// time out by lease: if the worker dies, they are due again then.
func (q *WorkQueue) Claim(ctx context.Context, limit int, lease time.Duration) ([]WorkItem, error) {
	c, err := q.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	rows, err := c.Query(ctx, `
		UPDATE `+workTable+` w SET due_at = now() + make_interval(secs => $2), updated_at = now()
		FROM (SELECT schema_name, owner_id FROM `+workTable+` WHERE due_at <= now()
			ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
		WHERE w.schema_name = d.schema_name AND w.owner_id = d.owner_id
		RETURNING w.schema_name, w.owner_id, w.generation, w.failures`, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("memory: claim embedding work: %w", interpretError(err))
	}
	items, err := pgx.CollectRows(rows, pgx.RowToStructByPos[WorkItem])
	if err != nil {
		return nil, fmt.Errorf("memory: claim embedding work: %w", interpretError(err))
	}
	return items, nil
}

// Earliest is when the next tenant's work is due; ok is false when the queue is empty.
func (q *WorkQueue) Earliest(ctx context.Context) (at time.Time, ok bool, err error) {
	c, err := q.conn(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	defer c.Release()
	var t *time.Time
	if err := c.QueryRow(ctx, `SELECT min(due_at) FROM `+workTable).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("memory: embedding work: %w", interpretError(err))
	}
	if t == nil {
		return time.Time{}, false, nil
	}
	return *t, true, nil
}

// Settle reschedules a claimed tenant at its next due job, or removes it when it has no job left
// (failed jobs wait for RetryFailedEmbeddings, which lists the tenant again). s is the tenant's
// scope; both happen in one of its transactions. A row whose generation moved since the claim is
// left as ingest set it.
func (q *WorkQueue) Settle(ctx context.Context, s Scope, it WorkItem) error {
	if it.Schema != s.Schema || it.OwnerID != s.OwnerID {
		return fmt.Errorf("memory: settle embedding work of %s in %s with the scope of %s in %s",
			it.OwnerID, it.Schema, s.OwnerID, s.Schema)
	}
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var next *time.Time
		if err := tx.QueryRow(ctx, nextDueSQL, s.OwnerID).Scan(&next); err != nil {
			return fmt.Errorf("memory: next embedding job: %w", err)
		}
		var err error
		if next == nil {
			_, err = tx.Exec(ctx, `DELETE FROM `+workTable+` WHERE schema_name = $1 AND owner_id = $2 AND generation = $3`,
				it.Schema, it.OwnerID, it.Generation)
		} else {
			_, err = tx.Exec(ctx, `UPDATE `+workTable+` SET due_at = $4, failures = 0, updated_at = now()
				WHERE schema_name = $1 AND owner_id = $2 AND generation = $3`, it.Schema, it.OwnerID, it.Generation, *next)
		}
		if err != nil {
			return fmt.Errorf("memory: settle embedding work: %w", err)
		}
		return nil
	})
	return err
}

// Defer makes a claimed tenant due again after the given pause; with failed, the look at it
// failed and its failure count grows. A row whose generation moved since the claim keeps the
// due time ingest gave it.
func (q *WorkQueue) Defer(ctx context.Context, it WorkItem, after time.Duration, failed bool) error {
	c, err := q.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `UPDATE `+workTable+` SET
			due_at = CASE WHEN generation = $3 THEN now() + make_interval(secs => $4) ELSE due_at END,
			failures = failures + $5::int, updated_at = now()
		WHERE schema_name = $1 AND owner_id = $2`, it.Schema, it.OwnerID, it.Generation, after.Seconds(), boolInt(failed))
	if err != nil {
		return fmt.Errorf("memory: defer embedding work: %w", interpretError(err))
	}
	return nil
}

// Remove drops a claimed tenant from the queue, unless ingest queued more work meanwhile: for a
// row whose tenant is gone, or lives in another schema now.
func (q *WorkQueue) Remove(ctx context.Context, it WorkItem) error {
	c, err := q.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_, err = c.Exec(ctx, `DELETE FROM `+workTable+` WHERE schema_name = $1 AND owner_id = $2 AND generation = $3`,
		it.Schema, it.OwnerID, it.Generation)
	if err != nil {
		return fmt.Errorf("memory: remove embedding work: %w", interpretError(err))
	}
	return nil
}

// ReconcileWork lists the scope's tenant in the work queue of the scope's database if it has
// embedding jobs that the queue does not know of (work queued before the queue existed, or a row
// lost some other way), and reports whether it did. It reads the tenant's jobs with one index
// probe, in one of the scope's transactions.
func ReconcileWork(ctx context.Context, s Scope) (bool, error) {
	var listed bool
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var next *time.Time
		if err := tx.QueryRow(ctx, nextDueSQL, s.OwnerID).Scan(&next); err != nil {
			return fmt.Errorf("memory: next embedding job: %w", err)
		}
		if next == nil {
			return nil
		}
		tag, err := tx.Exec(ctx, `INSERT INTO `+workTable+` (schema_name, owner_id, due_at) VALUES ($1, $2, $3)
			ON CONFLICT (schema_name, owner_id) DO NOTHING`, s.Schema, s.OwnerID, *next)
		if err != nil {
			return fmt.Errorf("memory: list the tenant's embedding work: %w", err)
		}
		listed = tag.RowsAffected() == 1
		return nil
	})
	return listed, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// IsSchemaGone reports whether err says that a scope's schema or one of its tables does not
// exist: the tenant was deleted, or its schema is not migrated yet.
func IsSchemaGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName)
}
