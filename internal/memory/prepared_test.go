package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// oneRouterConn is a pool of one connection as the router role, so every search of a test
// runs on the connection that prepared the previous ones.
func oneRouterConn(t *testing.T, e *env) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.WithUser(t, e.url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// preparedTenant creates a tenant of tier served through pool, with one document.
func preparedTenant(t *testing.T, e *env, eng *memory.Engine, tier registry.Tier, pool *pgxpool.Pool) memory.Scope {
	t.Helper()
	s := e.tenant(t, tier)
	s.Pool = pool
	_, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text",
		Content: fmt.Sprintf("Tenant %s keeps notes about routers and latency.", s.OwnerID)})
	require.NoError(t, err)
	return s
}

// TestPreparingASearchIsBoundedByTheStatementTimeout: the search that prepares its statement
// (the second on a connection) while a DDL lock is held on the tenant's chunk_terms fails with
// memory.ErrTimeout after the scope's StatementTimeout, as an unprepared search does, instead of
// waiting until its context ends; a search whose context ends while it prepares leaves a pool
// that serves the next search.
func TestPreparingASearchIsBoundedByTheStatementTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pool := oneRouterConn(t, e)
	eng := newEngine(t, newBuiltin(t))
	s := preparedTenant(t, e, eng, registry.TierSchema, pool)
	s.StatementTimeout = 500 * time.Millisecond
	text := memory.SearchParams{QueryText: "routers latency", SearchType: memory.SearchText}
	_, err := eng.Search(ctx, s, text) // first sight: unnamed
	require.NoError(t, err)

	tx, err := e.admin.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `LOCK TABLE `+quoteIdent(s.Schema)+`.chunk_terms IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = eng.Search(cctx, s, text)
	require.ErrorIs(t, err, memory.ErrTimeout)
	require.NoError(t, cctx.Err(), "the search waited for its context, not the statement timeout")

	// The caller gives up while the statement is being prepared (no statement timeout).
	s.StatementTimeout = 0
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	_, err = eng.Search(short, s, text)
	require.Error(t, err)
	require.ErrorIs(t, short.Err(), context.DeadlineExceeded)

	require.NoError(t, tx.Rollback(ctx))
	for range 3 {
		res, err := eng.Search(ctx, s, text)
		require.NoError(t, err)
		require.Len(t, res.Results, 1)
	}
}

// TestPreparedSearchSurvivesStaleStatements: a search statement prepared on a connection whose
// result type changed (a migration altering a column's type: SQLSTATE 0A000) or that the
// connection no longer holds (DEALLOCATE ALL: 26000) is forgotten and the search runs again
// unprepared, answering what it answered before; later searches prepare afresh.
func TestPreparedSearchSurvivesStaleStatements(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pool := oneRouterConn(t, e)
	eng := newEngine(t, newBuiltin(t))
	s := preparedTenant(t, e, eng, registry.TierSchema, pool)
	search := func(stage string) {
		t.Helper()
		for round := range 3 {
			for _, m := range modes {
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "routers latency", SearchType: m})
				require.NoError(t, err, "%s, round %d, %s", stage, round, m)
				require.Len(t, res.Results, 1, "%s, round %d, %s", stage, round, m)
				require.Equal(t, "d", res.Results[0].DocumentName)
			}
		}
	}
	search("before")
	stmts, _, _ := preparedSearches(t, pool)
	require.NotEmpty(t, stmts)

	_, err := e.admin.Exec(ctx, `ALTER TABLE `+quoteIdent(s.Schema)+`.chunks ALTER COLUMN chunk_index TYPE bigint`)
	require.NoError(t, err)
	search("after ALTER COLUMN TYPE")

	// Behind pgx's back (as a pooler's session reset would), on the pool's one connection.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = conn.Conn().PgConn().Exec(ctx, `DEALLOCATE ALL`).ReadAll()
	conn.Release()
	require.NoError(t, err)
	search("after DEALLOCATE ALL")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'tmc\_%'`,
		pgx.QueryExecModeSimpleProtocol).Scan(&n))
	require.Positive(t, n, "searches prepare again")
}

// TestOnePreparedSearch: with Config.PreparedSearches = 1, a hybrid search, whose two legs are
// cached statements of one round trip, never evicts the one it runs: every search answers.
func TestOnePreparedSearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pool := oneRouterConn(t, e)
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.PreparedSearches = 1 })
	for _, tier := range tiers {
		s := preparedTenant(t, e, eng, tier, pool)
		for i := range 4 {
			for _, m := range []string{memory.SearchHybrid, memory.SearchText, memory.SearchVector, memory.SearchHybrid} {
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "routers latency", SearchType: m})
				require.NoError(t, err, "tier %s search %d %s", tier, i, m)
				require.Len(t, res.Results, 1)
			}
		}
		stmts, _, _ := preparedSearches(t, pool)
		require.LessOrEqual(t, len(stmts), 1)
	}
}
