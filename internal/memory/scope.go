package memory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxvec "github.com/pgvector/pgvector-go/pgx"

	"github.com/tenantmem/tenantmem/internal/schema"
)

// Scope runs work for one tenant: the pool of the tenant's database, the schema holding its
// tables (schema.SharedSchema for the shared tier) and its owner id (the tenant id). A Scope is a
// small value; build one per request. It holds no connection and is safe for concurrent use.
type Scope struct {
	// Pool connects to the database of the tenant's tables, as the router role.
	Pool *pgxpool.Pool
	// Schema holds the tenant's tables. It is quoted, never interpolated raw.
	Schema string
	// OwnerID is the tenant id; every row the scope reads or writes carries it.
	OwnerID string
	// StatementTimeout bounds every statement of the scope's transactions. Zero keeps the
	// server's setting.
	StatementTimeout time.Duration
	// Fence, when set, guards every transaction of the scope against the tenant changing under
	// it (see [Fence]).
	Fence *Fence
}

// Fence makes a scope's transactions wait for, and then notice, a change of the tenant they
// serve. Each transaction takes the advisory lock LockID shared (so it waits while someone holds
// it exclusively, e.g. a delete, and such a holder waits for it), then runs Check, which must
// return one boolean true, else the transaction ends with [ErrFenced] before fn runs. Check runs
// after the lock, as its own statement, so it sees what the lock holder committed. The settings,
// the lock and the check travel in one round trip.
type Fence struct {
	LockID int64
	Check  string
	Args   []any
	// Refresh, when set, is called once when Check fails, before the error is returned: it may
	// return the scope to run the transaction in instead (the tenant moved to another tier or
	// placement), which then runs without a Refresh of its own. Nothing ran before the check, so
	// running the transaction again is safe. An error keeps ErrFenced.
	Refresh func(ctx context.Context) (Scope, error)
}

func (s Scope) validate() error {
	switch {
	case s.Pool == nil:
		return errors.New("memory: Scope.Pool is nil")
	case s.Schema == "":
		return errors.New("memory: Scope.Schema is empty")
	case s.StatementTimeout < 0:
		return errors.New("memory: Scope.StatementTimeout is negative")
	}
	if err := schema.ValidateTenantID(s.OwnerID); err != nil {
		return fmt.Errorf("memory: Scope.OwnerID: %w", err)
	}
	return nil
}

// scopeSQL sets the transaction-local state of a scope in one statement. With is_local = true
// every setting ends with the transaction, so nothing outlives it on a pooled connection.
const scopeSQL = `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
	set_config('statement_timeout', coalesce($3, current_setting('statement_timeout')), true)`

// InTx begins a transaction on the scope's pool, makes the tenant's schema (then the
// extensions schema) its search_path, sets the owner id that row-level security compares with
// and the statement timeout, all transaction-local in one statement, and runs fn. It commits
// when fn returns nil and rolls back otherwise (also when ctx is cancelled). It registers the
// pgvector types on the connection the first time it sees it, so the pool needs no AfterConnect
// hook.
//
// Nothing session-level is ever set: fn must use set_config(..., true) or SET LOCAL for any
// setting of its own.
func (s Scope) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.inTx(ctx, pgx.TxOptions{}, fn)
}

func (s Scope) inTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	if err := s.validate(); err != nil {
		return err
	}
	tx, err := s.Pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("memory: begin: %w", interpretError(err))
	}
	// After a commit this is a no-op (pgx.ErrTxClosed); it also runs when fn panics.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var timeout *string
	if s.StatementTimeout > 0 {
		ms := strconv.FormatInt(max(s.StatementTimeout.Milliseconds(), 1), 10)
		timeout = &ms
	}
	// pg_temp is named last so a temporary table can never shadow a tenant table.
	path := pgx.Identifier{s.Schema}.Sanitize() + ", " + pgx.Identifier{schema.ExtensionSchema}.Sanitize() + ", pg_temp"
	if s.Fence == nil {
		if _, err := tx.Exec(ctx, scopeSQL, path, s.OwnerID, timeout); err != nil {
			return fmt.Errorf("memory: scope transaction: %w", interpretError(err))
		}
	} else if err := s.fence(ctx, tx, path, timeout); err != nil {
		if errors.Is(err, ErrFenced) && s.Fence.Refresh != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			if next, rerr := s.Fence.Refresh(ctx); rerr == nil {
				if next.Fence != nil {
					f := *next.Fence
					f.Refresh = nil
					next.Fence = &f
				}
				return next.inTx(ctx, opts, fn)
			}
		}
		return err
	}
	if _, ok := tx.Conn().TypeMap().TypeForName("vector"); !ok {
		// The type is found through the search_path just set. The registration lives in the
		// connection's client-side type map, not in the server session.
		if err := pgxvec.RegisterTypes(ctx, tx.Conn()); err != nil {
			return fmt.Errorf("memory: register pgvector types: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return interpretError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("memory: commit: %w", interpretError(err))
	}
	return nil
}

// fence sends the scope settings, the shared lock and the check in one batch.
func (s Scope) fence(ctx context.Context, tx pgx.Tx, path string, timeout *string) error {
	b := &pgx.Batch{}
	b.Queue(scopeSQL, path, s.OwnerID, timeout)
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, s.Fence.LockID)
	b.Queue(s.Fence.Check, s.Fence.Args...)
	br := tx.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	var ok bool
	if err == nil {
		err = br.QueryRow().Scan(&ok)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("memory: scope transaction: %w", interpretError(err))
	}
	if !ok {
		return ErrFenced
	}
	return nil
}
