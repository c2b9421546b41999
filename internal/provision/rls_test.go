package provision_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestRowLevelSecurityAsRouterRole proves, connected as the router role (not a superuser, not the
// table owner, no BYPASSRLS), that a transaction sees and touches only the rows of the owner it set,
// and none without an owner, in both tiers.
func TestRowLevelSecurityAsRouterRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	tenants := map[string]registry.Tenant{}
	for _, tc := range []struct {
		id   string
		tier registry.Tier
	}{{"sa", registry.TierShared}, {"sb", registry.TierShared}, {"xa", registry.TierSchema}, {"xb", registry.TierSchema}} {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: tc.id, Tier: tc.tier})
		require.NoError(t, err)
		tenants[tc.id] = res.Tenant
		insertDocument(t, e.router, res.Tenant, "secret of "+tc.id)
	}
	var super, bypass bool
	require.NoError(t, e.router.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&super, &bypass))
	require.False(t, super)
	require.False(t, bypass)

	for _, pair := range [][2]string{{"sa", "sb"}, {"xa", "xb"}, {"sa", "xb"}} {
		a, b := tenants[pair[0]], tenants[pair[1]]
		aTable := pgx.Identifier{a.SchemaName, "documents"}.Sanitize()
		aChunks := pgx.Identifier{a.SchemaName, "chunks"}.Sanitize()

		// No owner set: nothing is visible and nothing can be written.
		require.NoError(t, pgx.BeginFunc(ctx, e.router, func(tx pgx.Tx) error {
			var n int
			require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM `+aTable).Scan(&n))
			require.Zero(t, n, "no owner set must see no rows")
			return nil
		}))
		err := pgx.BeginFunc(ctx, e.router, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO `+aTable+` (owner_id, document_name, document_type) VALUES ($1, 'x', 'text')`, a.ID)
			return err
		})
		requireCode(t, err, pgerrcode.InsufficientPrivilege) // new row violates row-level security policy

		// Scoped to B: A's rows cannot be read, counted, changed or deleted, even with A's schema
		// named explicitly and A's owner id in the WHERE clause.
		require.NoError(t, inTenant(t, e.router, b, func(tx pgx.Tx) error {
			var n int
			require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM `+aTable+` WHERE owner_id = $1`, a.ID).Scan(&n))
			require.Zero(t, n)
			require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM `+aChunks).Scan(&n))
			require.Zero(t, n)
			tag, err := tx.Exec(ctx, `UPDATE `+aTable+` SET document_name = 'pwned' WHERE owner_id = $1`, a.ID)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected())
			tag, err = tx.Exec(ctx, `DELETE FROM `+aTable+` WHERE owner_id = $1`, a.ID)
			require.NoError(t, err)
			require.Zero(t, tag.RowsAffected())
			return nil
		}))
		err = inTenant(t, e.router, b, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO `+aTable+` (owner_id, document_name, document_type) VALUES ($1, 'planted', 'text')`, a.ID)
			return err
		})
		requireCode(t, err, pgerrcode.InsufficientPrivilege)
		err = inTenant(t, e.router, b, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE documents SET owner_id = $1`, a.ID) // move own rows to A
			return err
		})
		requireCode(t, err, pgerrcode.InsufficientPrivilege)

		// A still has exactly its one row, untouched.
		require.NoError(t, inTenant(t, e.router, a, func(tx pgx.Tx) error {
			var name string
			require.NoError(t, tx.QueryRow(ctx, `SELECT document_name FROM documents`).Scan(&name))
			require.Equal(t, "secret of "+a.ID, name)
			return nil
		}))
	}

	// The owner setting is transaction-local: nothing of it survives on the pooled connection.
	conn, err := e.router.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', 'sa', true)`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	var owner *string
	require.NoError(t, conn.QueryRow(ctx, `SELECT nullif(current_setting('tenantmem.owner_id', true), '')`).Scan(&owner))
	require.Nil(t, owner)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.documents`).Scan(&n))
	require.Zero(t, n)
}

// TestRouterRoleHasNoDDLOrControlWrites checks the router role's privileges: DML on tenant tables
// only, read-only on the registry, nothing on goose's version tables or the audit log.
func TestRouterRoleHasNoDDLOrControlWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "p", Tier: registry.TierSchema})
	require.NoError(t, err)
	s := pgx.Identifier{res.Tenant.SchemaName}.Sanitize()
	for _, stmt := range []string{
		`CREATE TABLE ` + s + `.evil (x int)`,
		`CREATE SCHEMA evil`,
		`DROP TABLE ` + s + `.documents`,
		`ALTER TABLE ` + s + `.documents DISABLE ROW LEVEL SECURITY`,
		`DROP POLICY owner_isolation ON tenantmem_shared.documents`,
		`TRUNCATE tenantmem_shared.documents`,
		`SELECT * FROM ` + s + `.goose_db_version`,
		`DELETE FROM tenantmem_shared.goose_db_version`,
		`INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status) VALUES ('x', 'shared', 'tenantmem_shared', 'active')`,
		`UPDATE tenantmem_control.tenants SET status = 'active'`,
		`UPDATE tenantmem_control.api_keys SET revoked_at = NULL`,
		`SELECT * FROM tenantmem_control.audit_log`,
		`SET ROLE ` + provision.DefaultOwnerRole,
		`CREATE EXTENSION IF NOT EXISTS pg_trgm`,
	} {
		_, err := e.router.Exec(ctx, stmt)
		require.Error(t, err, stmt)
		requireCode(t, err, pgerrcode.InsufficientPrivilege)
	}
}

func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want SQLSTATE %s, got %v", code, err)
	require.Equal(t, code, pgErr.Code, pgErr.Message)
}

// TestLexicalIndexUnderRLS checks that lexical search's own index (chunk_terms, owner first) is
// used by the router role under row-level security with or without the LEAKPROOF option: text
// search no longer needs it (docs/memory.md). The GIN index the option was for is gone.
func TestLexicalIndexUnderRLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, leakproof := range []bool{false, true} {
		e := newEnv(t, nil)
		_, err := e.prov.Init(ctx, provision.InitParams{LeakproofTextSearch: leakproof})
		require.NoError(t, err)
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "lp", Tier: registry.TierShared})
		require.NoError(t, err)
		// 5,000 chunks of common words and one with a rare word.
		_, err = e.pool.Exec(ctx, `WITH d AS (INSERT INTO tenantmem_shared.documents (owner_id, document_name, document_type)
				VALUES ('lp', 'd', 'text') RETURNING document_id)
			INSERT INTO tenantmem_shared.chunks (document_id, owner_id, chunk_index, content, content_hash, token_count, search_vector)
			SELECT d.document_id, 'lp', i, c, md5(i::text), 2, to_tsvector('english', c)
			FROM d, generate_series(0, 5000) i, LATERAL (SELECT CASE WHEN i = 0 THEN 'zebra' ELSE 'common words ' || i END AS c) x;
			ANALYZE tenantmem_shared.chunk_terms`)
		require.NoError(t, err)
		var plan string
		var n int
		require.NoError(t, inTenant(t, e.router, res.Tenant, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM chunk_terms WHERE owner_id = $1 AND term = ANY($2::text[])`,
				res.Tenant.ID, []string{"zebra"}).Scan(&n); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `EXPLAIN SELECT chunk_id FROM chunk_terms WHERE owner_id = $1 AND term = ANY($2::text[])`,
				res.Tenant.ID, []string{"zebra"})
			if err != nil {
				return err
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			plan = strings.Join(lines, "\n")
			return err
		}))
		require.Equal(t, 1, n, "the rare word has one posting")
		require.Contains(t, plan, "chunk_terms_pkey", plan)
	}
}
