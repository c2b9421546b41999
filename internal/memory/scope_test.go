package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestScopeStatementTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.tenant(t, registry.TierShared)
	s.StatementTimeout = 50 * time.Millisecond
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT pg_sleep(5)`)
		return err
	})
	require.ErrorIs(t, err, memory.ErrTimeout)

	// A caller that gives up gets its context error, not a timeout.
	s.StatementTimeout = 0
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = s.InTx(cctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(cctx, `SELECT pg_sleep(5)`)
		return err
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, memory.ErrTimeout)
}

func TestScopeRejectsBadScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	good := e.tenant(t, registry.TierShared)
	for _, tc := range []struct {
		given string
		when  memory.Scope
	}{
		{"no pool", memory.Scope{Schema: good.Schema, OwnerID: good.OwnerID}},
		{"no schema", memory.Scope{Pool: good.Pool, OwnerID: good.OwnerID}},
		{"no owner", memory.Scope{Pool: good.Pool, Schema: good.Schema}},
		{"owner with newline", memory.Scope{Pool: good.Pool, Schema: good.Schema, OwnerID: good.OwnerID + "\n"}},
	} {
		t.Run(tc.given, func(t *testing.T) {
			err := tc.when.InTx(ctx, func(pgx.Tx) error { t.Fatal("ran"); return nil })
			require.Error(t, err)
		})
	}
	// A schema that does not exist finds no tables: the transaction fails, nothing leaks.
	bad := good
	bad.Schema = "tenant_does_not_exist"
	eng := newEngine(t, newBuiltin(t))
	_, err := eng.Statistics(ctx, bad)
	require.Error(t, err)
}

// TestReadPassesEmptyStringsAsEmptyStrings: the one-round-trip read path encoded an empty string
// argument as NULL (a nil buffer from pgtype), so a fence check comparing a text column with ”
// (a tenant without a database name) failed and every search answered 503.
func TestReadPassesEmptyStringsAsEmptyStrings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	engine := newEngine(t, newBuiltin(t))
	s := e.tenant(t, registry.TierShared)
	_, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text", Content: "hello there"})
	require.NoError(t, err)
	s.Fence = &memory.Fence{LockID: 42, Check: `SELECT CASE WHEN $1::text IS NOT NULL AND $1::text = '' AND $2::text = 'x' THEN NULL
		ELSE 'the empty string arrived as NULL' END`, Args: []any{"", "x"}}
	res, err := engine.Search(ctx, s, memory.SearchParams{QueryText: "hello", SearchType: memory.SearchText})
	require.NoError(t, err)
	require.Len(t, res.Results, 1)
}
