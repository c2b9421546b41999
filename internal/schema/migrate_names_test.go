package schema

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
)

// newSchemaMigrator makes a database with pgvector and an empty schema named name, and returns a
// migrator for it (embedding dimension 4) and a superuser connection.
func newSchemaMigrator(t testing.TB, name string) (*Migrator, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	cc, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	conn, err := pgx.ConnectConfig(ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, `CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions; CREATE SCHEMA `+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	m, err := NewMigrator(MigratorConfig{ConnConfig: cc, EmbeddingDimension: 4})
	require.NoError(t, err)
	return m, conn
}

// TestUniqueFunctionNamesMigrationRoundTrips: tenant migration 00012 (functions named after the
// schema) down and up again, down after the schema's oid changed (as a dump and restore does),
// then 00011 and 00009 down, and all up again keeps the BM25 postings maintained by the chunk triggers each way,
// and leaves the names each direction promises.
func TestUniqueFunctionNamesMigrationRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, conn := newSchemaMigrator(t, "tenant_rt")
	_, err := m.Up(ctx, TenantSet, "tenant_rt")
	require.NoError(t, err)

	names := func() []string {
		var out []string
		require.NoError(t, conn.QueryRow(ctx, `SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
			WHERE pronamespace = 'tenant_rt'::regnamespace`).Scan(&out))
		return out
	}
	var oid string
	require.NoError(t, conn.QueryRow(ctx, `SELECT 'tenant_rt'::regnamespace::oid::text`).Scan(&oid))
	// Each insert adds a leaf chunk with two terms; each delete removes one: the postings follow.
	n := 0
	postings := func() {
		t.Helper()
		n++
		_, err := conn.Exec(ctx, `SET tenantmem.owner_id = 'o'`)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `WITH d AS (INSERT INTO tenant_rt.documents (owner_id, document_name, document_type)
				VALUES ('o', 'd', 'text') RETURNING document_id)
			INSERT INTO tenant_rt.chunks (document_id, owner_id, chunk_index, content, content_hash, token_count, search_vector)
			SELECT document_id, 'o', 0, 'quick foxes', 'h', 2, to_tsvector('english', 'quick foxes') FROM d`)
		require.NoError(t, err)
		var terms int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM tenant_rt.chunk_terms`).Scan(&terms))
		require.Equal(t, 2*n, terms, "postings after insert %d", n)
		_, err = conn.Exec(ctx, `DELETE FROM tenant_rt.chunks WHERE chunk_id = (SELECT chunk_id FROM tenant_rt.chunks LIMIT 1)`)
		require.NoError(t, err)
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM tenant_rt.chunk_terms`).Scan(&terms))
		require.Equal(t, 2*(n-1), terms, "postings after delete %d", n)
		_, err = conn.Exec(ctx, `WITH d AS (INSERT INTO tenant_rt.documents (owner_id, document_name, document_type)
				VALUES ('o', 'd', 'text') RETURNING document_id)
			INSERT INTO tenant_rt.chunks (document_id, owner_id, chunk_index, content, content_hash, token_count, search_vector)
			SELECT document_id, 'o', 0, 'lazy dogs', 'h', 2, to_tsvector('english', 'lazy dogs') FROM d`)
		require.NoError(t, err)
	}
	up := []string{"chunk_term_impact_" + oid, "chunk_terms_delete_" + oid, "chunk_terms_insert_" + oid,
		"tenantmem_capture_chunks_" + oid, "tenantmem_capture_documents_" + oid, "tenantmem_capture_embedding_jobs_" + oid,
		"tenantmem_capture_idempotency_keys_" + oid, "tenantmem_capture_search_history_" + oid, "tenantmem_capture_tenant_usage_" + oid}
	require.Equal(t, up, names())
	postings()

	p, db, err := m.provider(TenantSet, "tenant_rt")
	require.NoError(t, err)
	defer db.Close()
	old := []string{"chunk_term_impact", "chunk_terms_delete", "chunk_terms_insert",
		"tenantmem_capture_chunks", "tenantmem_capture_documents", "tenantmem_capture_embedding_jobs",
		"tenantmem_capture_idempotency_keys", "tenantmem_capture_search_history", "tenantmem_capture_tenant_usage"}
	down12 := func() {
		t.Helper()
		res, err := p.Down(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 12, res.Source.Version)
		require.Equal(t, old, names())
		postings()
	}
	down12()
	// 00012 again straight after its Down (the generator it drops is gone by then).
	_, err = m.Up(ctx, TenantSet, "tenant_rt")
	require.NoError(t, err)
	require.Equal(t, up, names())
	postings()

	// A dump and restore keeps the names and gives the schema another oid: the Down finds the
	// functions through their triggers, not through the oid. Here the trigger functions take a
	// suffix that is not the schema's oid (the impact function keeps its name: the trigger bodies
	// call it by name, and the Down finds it by prefix either way).
	for _, name := range up[1:] {
		_, err := conn.Exec(ctx, `ALTER FUNCTION tenant_rt.`+name+`() RENAME TO `+strings.TrimSuffix(name, oid)+"1")
		require.NoError(t, err)
	}
	postings()
	down12()

	// Further down, through 00011 and the change capture of 00009, and up again from there.
	for _, v := range []int64{11, 9} {
		res, err := p.Down(ctx)
		require.NoError(t, err)
		require.EqualValues(t, v, res.Source.Version)
	}
	require.Equal(t, []string{"chunk_term_impact", "chunk_terms_delete", "chunk_terms_insert"}, names())
	_, err = m.Up(ctx, TenantSet, "tenant_rt")
	require.NoError(t, err)
	require.Equal(t, up, names())
	postings()
}

// TestUniqueFunctionNamesMigrationLetsReadersGoOn: upgrading a schema to 00012 while a transaction
// reads its chunks (a search, a backup) does not wait for it: the chunk triggers are replaced, not
// dropped, so the migration never asks for a lock that would queue every reader behind it.
func TestUniqueFunctionNamesMigrationLetsReadersGoOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, conn := newSchemaMigrator(t, "tenant_rd")
	_, err := m.UpTo(ctx, TenantSet, "tenant_rd", 11)
	require.NoError(t, err)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT count(*) FROM tenant_rd.chunks`)
	require.NoError(t, err)
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := m.Up(mctx, TenantSet, "tenant_rd")
	require.NoError(t, err, "the migration waited for the reader")
	require.EqualValues(t, 12, v)
}

// TestUniqueFunctionNamesKeepTheDefinitions: at version 12 each function of a schema is the one
// of version 11 under its new name: the same body (up to the names it calls and its layout), the
// same settings (search_path), volatility, owner and privileges.
func TestUniqueFunctionNamesKeepTheDefinitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, conn := newSchemaMigrator(t, "tenant_def")
	suffix := regexp.MustCompile(`\b(chunk_terms_insert|chunk_terms_delete|chunk_term_impact|tenantmem_capture_[a-z_]+?)_[0-9]+\b`)
	space := regexp.MustCompile(`\s+`)
	defs := func() map[string]string {
		rows, err := conn.Query(ctx, `SELECT regexp_replace(p.proname, '_[0-9]+$', ''),
				pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '') || ' owner=' || p.proowner::regrole::text
			FROM pg_proc p WHERE p.pronamespace = 'tenant_def'::regnamespace`)
		require.NoError(t, err)
		out := map[string]string{}
		for rows.Next() {
			var name, def string
			require.NoError(t, rows.Scan(&name, &def))
			out[name] = space.ReplaceAllString(suffix.ReplaceAllString(def, "$1"), " ")
		}
		require.NoError(t, rows.Err())
		return out
	}
	_, err := m.UpTo(ctx, TenantSet, "tenant_def", 11)
	require.NoError(t, err)
	before := defs()
	_, err = m.Up(ctx, TenantSet, "tenant_def")
	require.NoError(t, err)
	after := defs()
	require.Contains(t, before, "tenantmem_capture_changes")
	delete(before, "tenantmem_capture_changes") // the generator, dropped by 12
	require.Len(t, after, len(before))
	for name, def := range before {
		require.Equal(t, def, after[name], name)
	}
}
