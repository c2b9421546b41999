package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// explainedRouterPool is a one-connection pool of the router role whose session sends the plan
// of every statement it runs, those inside functions, triggers and foreign key checks included,
// to the client as a notice (auto_explain, loaded for the router role in this test's database).
func explainedRouterPool(t *testing.T, e *env) (*pgxpool.Pool, *pgtest.Plans) {
	t.Helper()
	ctx := context.Background()
	var db string
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	role := pgx.Identifier{provision.DefaultRouterRole}.Sanitize()
	for _, set := range []string{`session_preload_libraries = 'auto_explain'`, `auto_explain.log_min_duration = 0`,
		`auto_explain.log_nested_statements = on`, `auto_explain.log_level = notice`} {
		_, err := e.admin.Exec(ctx, `ALTER ROLE `+role+` IN DATABASE `+pgx.Identifier{db}.Sanitize()+` SET `+set)
		require.NoError(t, err)
	}
	log := &pgtest.Plans{}
	cfg, err := pgxpool.ParseConfig(pgtest.WithUser(t, e.url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	cfg.MaxConns = 1
	cfg.ConnConfig.OnNotice = log.OnNotice
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, log
}

// fillShared gives each owner docs documents of two chunks each in the shared tier, with SQL as
// the superuser (no embeddings), keeps their usage rows true, then analyzes the tables as
// autovacuum would have.
func fillShared(t *testing.T, e *env, owners []string, docs int) {
	t.Helper()
	ctx := context.Background()
	for _, owner := range owners {
		err := pgx.BeginFunc(ctx, e.admin, func(tx pgx.Tx) error {
			for _, q := range []string{
				`SELECT set_config('tenantmem.owner_id', $1, true), set_config('search_path', 'tenantmem_shared, extensions', true), $2::int`,
				`INSERT INTO documents (document_id, owner_id, id_at_origin, document_name, document_type, metadata, content_bytes)
					SELECT md5($1 || ':doc' || d)::uuid, $1, 'origin-' || d, 'Document ' || d,
						CASE WHEN d % 3 = 0 THEN 'markdown' ELSE 'text' END, jsonb_build_object('group', d % 10), 200
					FROM generate_series(1, $2::int) d`,
				`INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, search_vector)
					SELECT md5($1 || ':chunk' || d || ':' || k)::uuid, md5($1 || ':doc' || d)::uuid, $1, k, 0,
						'filler text number ' || d || ' part ' || k, md5(d || ':' || k), 5,
						to_tsvector('english', 'filler text number ' || d || ' part ' || k)
					FROM generate_series(1, $2::int) d, generate_series(0, 1) k`,
				`UPDATE tenant_usage SET documents = documents + $2, chunks = chunks + 2 * $2, content_bytes = content_bytes + 200 * $2
					WHERE owner_id = $1`,
			} {
				if _, err := tx.Exec(ctx, q, owner, docs); err != nil {
					return err
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	_, err := e.admin.Exec(ctx, `ANALYZE tenantmem_shared.documents, tenantmem_shared.chunks, tenantmem_shared.chunk_terms,
		tenantmem_shared.tenant_usage, tenantmem_shared.idempotency_keys, tenantmem_shared.embedding_jobs`)
	require.NoError(t, err)
}

// TestSharedTierStatementsUseTheIndexes: every statement a write, read or search of a shared-tier
// tenant runs as the router role (under row-level security), triggers and foreign key checks
// included, reads the shared documents and chunks tables through an index once they hold a few
// thousand documents of several tenants, never whole: a scan of every tenant's rows per request
// makes a tenant's requests cost what the whole shared tier holds (issues 9 and 12). Each
// operation runs seven times on one session, so a prepared statement's generic plan (chosen from
// the sixth execution) is checked too.
func TestSharedTierStatementsUseTheIndexes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var owners []string
	var s memory.Scope
	const docs = 1500
	for i := range 4 {
		sc := e.tenant(t, registry.TierShared)
		owners = append(owners, sc.OwnerID)
		if i == 0 {
			s = sc
		}
	}
	fillShared(t, e, owners, docs)
	pool, log := explainedRouterPool(t, e)
	s.Pool = pool
	eng := newEngine(t, newBuiltin(t))
	seqScan := regexp.MustCompile(`Seq Scan on (documents|chunks)\b`)

	var n int
	next := func() int { n++; return n }
	docOf := func(i int) string {
		var id string
		require.NoError(t, e.admin.QueryRow(ctx, `SELECT md5($1 || ':doc' || $2::int)::uuid::text`, s.OwnerID, i).Scan(&id))
		return id
	}
	quota := s
	quota.Quota = memory.Quota{Documents: 1_000_000}
	limit := 5
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"add", func() error {
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
				Content: fmt.Sprintf("a new document %d", next())})
			return err
		}},
		{"add with a new id at origin", func() error {
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
				Content: "a new document with an origin", IDAtOrigin: fmt.Sprintf("new-%d", next())})
			return err
		}},
		{"upsert by id at origin", func() error {
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
				Content: fmt.Sprintf("replaced content %d", next()), IDAtOrigin: fmt.Sprintf("origin-%d", 10+n)})
			return err
		}},
		{"add with quota and idempotency key", func() error {
			k := fmt.Sprintf("key-%d", next())
			_, err := eng.AddDocument(ctx, quota, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
				Content: "idempotent", Idempotency: &memory.IdempotencyKey{Key: k, RequestHash: []byte(k)}})
			if err != nil {
				return err
			}
			_, err = eng.AddDocument(ctx, quota, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text",
				Content: "idempotent", Idempotency: &memory.IdempotencyKey{Key: k, RequestHash: []byte(k)}})
			return err
		}},
		{"get", func() error {
			_, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: docOf(100 + next()), IncludeChunks: true})
			return err
		}},
		{"list", func() error {
			_, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{Limit: &limit})
			return err
		}},
		{"list by type", func() error {
			_, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{Limit: &limit, DocumentType: "markdown"})
			return err
		}},
		{"list by id at origin", func() error {
			_, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{IDAtOrigin: fmt.Sprintf("origin-%d", 200+next())})
			return err
		}},
		{"list by metadata", func() error {
			_, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{Limit: &limit, MetadataFilter: json.RawMessage(`{"group": 3}`)})
			return err
		}},
		{"statistics", func() error {
			_, err := eng.Statistics(ctx, s)
			return err
		}},
		{"delete", func() error {
			return eng.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: docOf(300 + next())})
		}},
		{"delete many by id", func() error {
			i := next()
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{DocumentIDs: []string{docOf(400 + 2*i), docOf(401 + 2*i)}})
			return err
		}},
		{"delete many by metadata", func() error {
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{MetadataFilter: json.RawMessage(fmt.Sprintf(`{"missing": %d}`, next()))})
			return err
		}},
		{"text search", func() error {
			_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: fmt.Sprintf("filler number %d", next()), SearchType: memory.SearchText})
			return err
		}},
		{"hybrid search", func() error {
			_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: fmt.Sprintf("new document %d", next()), SearchType: memory.SearchHybrid})
			return err
		}},
		{"vector search by type", func() error {
			_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: fmt.Sprintf("document %d", next()), SearchType: memory.SearchVector,
				DocumentTypes: []string{"text"}})
			return err
		}},
	} {
		log.Take()
		for range 7 {
			require.NoError(t, tc.op(), tc.name)
		}
		plans := log.Take()
		require.NotEmpty(t, plans, "%s: auto_explain reported no plan", tc.name)
		for _, p := range plans {
			if seqScan.MatchString(p) {
				t.Errorf("%s reads a shared table whole:\n%s", tc.name, p)
			}
		}
	}
}

// fkCheck matches the plan of the foreign key check an insert of chunks runs on documents.
var fkCheck = regexp.MustCompile(`(?s)Query Text: SELECT 1 FROM ONLY "tenantmem_shared"\."documents" x WHERE "document_id" OPERATOR\(pg_catalog\.=\) \$1 FOR KEY SHARE OF x\n(.*)`)

// TestSharedTierForeignKeyCheckFollowsTheTableSize: every chunk a write inserts runs the foreign
// key check of chunks.document_id, one lookup of documents by primary key. While the shared
// documents table holds a few pages (a tenant of 10,000 chunks in documents of 100 chunks is 100
// documents), reading those pages is cheaper than the index and the planner does it: one
// sequential scan of the table per chunk inserted, which is what pg_stat_user_tables counts after
// a run of one-chunk writes. It is bounded by the table's few pages. Once the table holds
// thousands of documents of several tenants and has been analyzed (autovacuum does it after 10%
// of the rows changed), the same session looks the document up through documents_pkey: the
// cached plan of the check is replanned, not kept from when the table was small.
func TestSharedTierForeignKeyCheckFollowsTheTableSize(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	s := e.tenant(t, registry.TierShared)
	fillShared(t, e, []string{s.OwnerID}, 100)
	pool, log := explainedRouterPool(t, e)
	s.Pool = pool
	eng := newEngine(t, newBuiltin(t))
	var seqScans []int64
	checks := func(phase string) []string {
		t.Helper()
		log.Take()
		for i := range 7 {
			res, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "w", DocumentType: "text",
				Content: fmt.Sprintf("one chunk written %s, number %d", phase, i)})
			require.NoError(t, err)
			require.Equal(t, 1, res.ChunksCreated)
		}
		var plans []string
		for _, p := range log.Take() {
			if m := fkCheck.FindStringSubmatch(p); m != nil {
				plans = append(plans, m[1])
			}
		}
		require.Len(t, plans, 7, "%s: one foreign key check per chunk inserted", phase)
		// What pg_stat_user_tables.seq_scan counts for one chunk inserted as the router role.
		err := s.InTx(ctx, func(tx pgx.Tx) error {
			// The counter includes this session's counts not yet flushed (they are flushed
			// between transactions only): the difference within one transaction is exact.
			var before, after int64
			if err := tx.QueryRow(ctx, `SELECT pg_stat_get_xact_numscans('tenantmem_shared.documents'::regclass)`).Scan(&before); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO chunks (document_id, owner_id, chunk_index, content, content_hash, token_count)
				VALUES (md5($1 || ':doc1')::uuid, $1, 100 + $2::int, 'counted', 'h', 1)`, s.OwnerID, len(phase)); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT pg_stat_get_xact_numscans('tenantmem_shared.documents'::regclass)`).Scan(&after); err != nil {
				return err
			}
			scans := after - before
			t.Logf("%s: %d sequential scan(s) of documents for one chunk inserted", phase, scans)
			seqScans = append(seqScans, scans)
			return nil
		})
		require.NoError(t, err)
		t.Logf("%s: %s", phase, plans[len(plans)-1])
		return plans
	}

	for _, p := range checks("into 100 documents") {
		require.Contains(t, p, "Seq Scan on documents x", "a table of a few pages is read whole")
	}

	others := make([]string, 4)
	for i := range others {
		others[i] = e.tenant(t, registry.TierShared).OwnerID
	}
	fillShared(t, e, others, 1500)
	for _, p := range checks("into 6,100 documents of 5 tenants") {
		require.NotContains(t, p, "Seq Scan", "the check reads the shared documents table whole")
		require.Contains(t, p, "Index Scan using documents_pkey on documents x")
	}
	require.Equal(t, []int64{1, 0}, seqScans, "sequential scans of documents per chunk inserted, small then large")
}
