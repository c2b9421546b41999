package memory_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestIsolation checks every data path: tenant B cannot read, change, delete, count or detect
// tenant A's documents, and lists, statistics, searches, history and the queue of B never
// include A's rows. It runs for two tenants of the shared tier (one table, RLS + owner_id
// filters) and for two schema-tier tenants.
func TestIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	failing := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, failing)
	worker := newWorker(t, failing)
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			a, b := e.tenant(t, tier), e.tenant(t, tier)
			failing.failNext(1) // A's document waits in the queue
			docA, err := eng.AddDocument(ctx, a, memory.DocumentAddParams{DocumentName: "secret", DocumentType: "text",
				IDAtOrigin: "same-id", Content: "the secret recipe uses saffron", Metadata: json.RawMessage(`{"team":"red"}`)})
			require.NoError(t, err)
			require.Equal(t, 1, docA.EmbeddingsPending)
			_, err = eng.Search(ctx, a, memory.SearchParams{QueryText: "only tenant a asks this", SearchType: memory.SearchText})
			require.NoError(t, err)

			// Read, change, delete, detect: A's id is exactly a missing id for B.
			missing := "7b0e5a3c-1111-4222-8333-944445555666"
			_, errA := eng.GetDocument(ctx, b, memory.DocumentGetParams{DocumentID: docA.DocumentID, IncludeChunks: true})
			_, errMissing := eng.GetDocument(ctx, b, memory.DocumentGetParams{DocumentID: missing})
			require.ErrorIs(t, errA, memory.ErrNotFound)
			require.Equal(t, errMissing.Error(), errA.Error())
			errA = eng.DeleteDocument(ctx, b, memory.DocumentDeleteParams{DocumentID: docA.DocumentID})
			errMissing = eng.DeleteDocument(ctx, b, memory.DocumentDeleteParams{DocumentID: missing})
			require.ErrorIs(t, errA, memory.ErrNotFound)
			require.Equal(t, errMissing.Error(), errA.Error())
			del, err := eng.DeleteDocuments(ctx, b, memory.DocumentDeleteManyParams{DocumentIDs: []string{docA.DocumentID}})
			require.NoError(t, err)
			require.Zero(t, del.DeletedCount)
			del, err = eng.DeleteDocuments(ctx, b, memory.DocumentDeleteManyParams{MetadataFilter: json.RawMessage(`{"team":"red"}`)})
			require.NoError(t, err)
			require.Zero(t, del.DeletedCount)

			// The same id_at_origin in B creates B's own document; A's is untouched.
			docB, err := eng.AddDocument(ctx, b, memory.DocumentAddParams{DocumentName: "mine", DocumentType: "text",
				IDAtOrigin: "same-id", Content: "an ordinary recipe with salt"})
			require.NoError(t, err)
			require.True(t, docB.Created)
			require.NotEqual(t, docA.DocumentID, docB.DocumentID)

			// Count, list, search, history, queue: B sees only its own.
			st, err := eng.Statistics(ctx, b)
			require.NoError(t, err)
			require.Equal(t, memory.Statistics{DocumentCount: 1, ChunkCount: 1, TotalSizeBytes: int64(len("an ordinary recipe with salt")),
				DocumentTypeBreakdown: map[string]int{"text": 1}}, st)
			list, err := eng.ListDocuments(ctx, b, memory.DocumentListParams{})
			require.NoError(t, err)
			require.Equal(t, 1, list.Total)
			require.Equal(t, docB.DocumentID, list.Documents[0].DocumentID)
			for _, mode := range []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid} {
				res, err := eng.Search(ctx, b, memory.SearchParams{QueryText: "secret recipe saffron", SearchType: mode,
					IncludeParentContext: true, IncludeDocuments: true})
				require.NoError(t, err)
				for _, r := range res.Results {
					require.Equal(t, docB.DocumentID, r.DocumentID, mode)
				}
			}
			res, err := eng.Search(ctx, b, memory.SearchParams{QueryText: "saffron", SearchType: memory.SearchText})
			require.NoError(t, err)
			require.Empty(t, res.Results)
			hist, err := eng.SearchHistory(ctx, b, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			for _, h := range hist {
				require.NotEqual(t, "only tenant a asks this", h.QueryText, "A's search is not in B's history")
			}
			require.Len(t, hist, 4)
			qs, err := eng.EmbeddingStats(ctx, b)
			require.NoError(t, err)
			require.Zero(t, qs.Pending)
			n, err := worker.ProcessScope(ctx, b)
			require.NoError(t, err)
			require.Zero(t, n, "B's worker pass does not touch A's jobs")
			qs, err = eng.EmbeddingStats(ctx, a)
			require.NoError(t, err)
			require.Equal(t, 1, qs.Pending)
			// B's retry of failed jobs does not requeue A's failed job.
			_, err = e.admin.Exec(ctx, `UPDATE `+pgx.Identifier{a.Schema, "embedding_jobs"}.Sanitize()+
				` SET status = 'failed' WHERE owner_id = $1`, a.OwnerID)
			require.NoError(t, err)
			requeued, err := eng.RetryFailedEmbeddings(ctx, b)
			require.NoError(t, err)
			require.Zero(t, requeued)
			qs, err = eng.EmbeddingStats(ctx, a)
			require.NoError(t, err)
			require.Equal(t, memory.EmbeddingQueueStats{Failed: 1}, qs)
			requeued, err = eng.RetryFailedEmbeddings(ctx, a)
			require.NoError(t, err)
			require.Equal(t, 1, requeued)

			// A is intact.
			got, err := eng.GetDocument(ctx, a, memory.DocumentGetParams{DocumentID: docA.DocumentID, IncludeChunks: true})
			require.NoError(t, err)
			require.Equal(t, "secret", got.DocumentName)
			require.Len(t, got.Chunks, 1)

			// Even a statement without an owner filter sees only B's rows (row-level security), and
			// writing a row for A from B's scope is refused.
			err = b.InTx(ctx, func(tx pgx.Tx) error {
				for _, table := range []string{"documents", "chunks", "search_history", "embedding_jobs", "chunk_terms", "chunk_stats"} {
					var others int
					require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE owner_id <> $1`, b.OwnerID).Scan(&others))
					require.Zero(t, others, table)
				}
				return nil
			})
			require.NoError(t, err)
			err = b.InTx(ctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO documents (owner_id, document_name, document_type) VALUES ($1, 'x', 'text')`, a.OwnerID)
				return err
			})
			require.ErrorContains(t, err, "row-level security")
			// Nor can B plant postings or statistics that would change A's text scores.
			for _, stmt := range []string{
				`INSERT INTO chunk_terms (owner_id, term, impact, chunk_id, tf, dl) VALUES ($1, 'saffron', 1, gen_random_uuid(), 1, 1)`,
				`INSERT INTO chunk_stats (owner_id, leaf_count, term_count) VALUES ($1, 1000, 1000)
					ON CONFLICT (owner_id) DO UPDATE SET leaf_count = 1000`,
			} {
				err = b.InTx(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, stmt, a.OwnerID)
					return err
				})
				require.Error(t, err, stmt)
			}
		})
	}
}

// TestScopeLeavesNoSessionState checks that the scope's settings (search_path, owner id,
// statement timeout, HNSW settings) end with the transaction on a pooled connection: it runs
// the engine on a pool of one connection and then inspects that connection's session.
func TestScopeLeavesNoSessionState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(e.router.Config().ConnString())
	require.NoError(t, err)
	cfg.MaxConns = 1
	one, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer one.Close()

	for _, exact := range []int{-1, 0} { // the HNSW path and the exact path
		eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.ExactSearchThreshold = exact })
		s := e.tenant(t, registry.TierSchema)
		s.Pool = one
		s.StatementTimeout = 1500 * time.Millisecond
		_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "hello"})
		require.NoError(t, err)
		for _, mode := range []string{memory.SearchVector, memory.SearchHybrid} {
			_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "hello", SearchType: mode})
			require.NoError(t, err)
		}
		var owner, path, ef, iter, timeout, readOnly, planMode string
		require.NoError(t, one.QueryRow(ctx, `SELECT coalesce(current_setting('tenantmem.owner_id', true), ''),
			current_setting('search_path'), coalesce(current_setting('hnsw.ef_search', true), '40'),
			coalesce(current_setting('hnsw.iterative_scan', true), 'off'), current_setting('statement_timeout'),
			current_setting('transaction_read_only'), current_setting('plan_cache_mode')`).
			Scan(&owner, &path, &ef, &iter, &timeout, &readOnly, &planMode))
		require.Equal(t, "off", readOnly)
		require.Equal(t, "auto", planMode)
		require.Empty(t, owner)
		require.Equal(t, `"$user", public`, path)
		require.Equal(t, "40", ef)
		require.Equal(t, "off", iter)
		require.Equal(t, "0", timeout)
		// Without the owner setting, row-level security shows no rows at all.
		var n int
		require.NoError(t, one.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Schema, "documents"}.Sanitize()).Scan(&n))
		require.Zero(t, n)
	}
}
