package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func chunkIDs(t *testing.T, eng *memory.Engine, s memory.Scope, docID string) []string {
	t.Helper()
	d, err := eng.GetDocument(context.Background(), s, memory.DocumentGetParams{DocumentID: docID, IncludeChunks: true})
	require.NoError(t, err)
	ids := make([]string, len(d.Chunks))
	for i, c := range d.Chunks {
		ids[i] = c.ChunkID
	}
	return ids
}

func TestAddDocumentUpsertIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			d1 := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
			first, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{
				DocumentName: "contract_v1.pdf", DocumentType: "pdf", IDAtOrigin: "doc-2024-002",
				Content: longText("alpha", 900), Metadata: json.RawMessage(`{"version":1,"status":"draft"}`), DocumentDate: &d1,
			})
			require.NoError(t, err)
			require.True(t, first.Created)
			require.Greater(t, first.ChunksCreated, 1)
			oldChunks := chunkIDs(t, eng, s, first.DocumentID)
			require.Len(t, oldChunks, first.ChunksCreated)

			d2 := time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC)
			second, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{
				DocumentName: "contract_v2.md", DocumentType: "markdown", IDAtOrigin: "doc-2024-002",
				Content: "# Final\n\nThe final version.", Metadata: json.RawMessage(`{"version":2}`), DocumentDate: &d2,
			})
			require.NoError(t, err)
			require.False(t, second.Created)
			require.Equal(t, first.DocumentID, second.DocumentID)
			require.True(t, second.CreatedAt.Equal(first.CreatedAt))
			require.True(t, second.UpdatedAt.After(first.UpdatedAt), "updated_at grows")

			got, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: first.DocumentID, IncludeChunks: true})
			require.NoError(t, err)
			require.Equal(t, "contract_v2.md", got.DocumentName)
			require.Equal(t, "markdown", got.DocumentType)
			require.JSONEq(t, `{"version":2}`, string(got.Metadata), "metadata is replaced, not merged")
			require.True(t, got.DocumentDate.Equal(d2))
			require.EqualValues(t, len("# Final\n\nThe final version."), got.ContentBytes)
			require.True(t, got.CreatedAt.Equal(first.CreatedAt))
			require.Len(t, got.Chunks, second.ChunksCreated)
			require.Equal(t, second.ChunksCreated, got.ChunkCount)
			for _, c := range got.Chunks {
				require.NotContains(t, oldChunks, c.ChunkID, "old chunks are gone")
				require.Contains(t, c.Content, "final")
			}

			// Re-adding three times still leaves one document for that id.
			for i := range 3 {
				_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{
					DocumentName: fmt.Sprintf("v%d", i), DocumentType: "text", IDAtOrigin: "doc-2024-002", Content: "again"})
				require.NoError(t, err)
			}
			list, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{IDAtOrigin: "doc-2024-002"})
			require.NoError(t, err)
			require.Equal(t, 1, list.Total)
			st, err := eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, 1, st.DocumentCount)
			require.Equal(t, 1, st.ChunkCount)

			// Without id_at_origin every add is a new document.
			a, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "same"})
			require.NoError(t, err)
			b, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "same"})
			require.NoError(t, err)
			require.True(t, a.Created)
			require.True(t, b.Created)
			require.NotEqual(t, a.DocumentID, b.DocumentID)
		})
	}
}

func TestSameIDAtOriginInTwoTenantsStaysDistinct(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	// Two shared-tier tenants share one table; a schema-tier tenant has its own.
	scopes := []memory.Scope{e.tenant(t, registry.TierShared), e.tenant(t, registry.TierShared), e.tenant(t, registry.TierSchema)}
	ids := map[string]bool{}
	for i, s := range scopes {
		r, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{
			DocumentName: fmt.Sprintf("owner %d", i), DocumentType: "text", IDAtOrigin: "shared-doc-001", Content: "test document"})
		require.NoError(t, err)
		require.True(t, r.Created)
		ids[r.DocumentID] = true
	}
	require.Len(t, ids, 3)
	for i, s := range scopes {
		list, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{IDAtOrigin: "shared-doc-001"})
		require.NoError(t, err)
		require.Equal(t, 1, list.Total)
		require.Equal(t, fmt.Sprintf("owner %d", i), list.Documents[0].DocumentName)
		res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "test document", SearchType: memory.SearchText})
		require.NoError(t, err)
		require.Len(t, res.Results, 1)
		require.Equal(t, list.Documents[0].DocumentID, res.Results[0].DocumentID)
	}
}

// TestUpsertIsAtomic makes the chunk insert of a re-index fail and checks that the old version
// survives whole: the document row, its name and every old chunk.
func TestUpsertIsAtomic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			v1, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "v1", DocumentType: "text",
				IDAtOrigin: "atomic", Content: longText("original", 700)})
			require.NoError(t, err)
			before := chunkIDs(t, eng, s, v1.DocumentID)

			// A trigger (installed as superuser) rejects chunks containing POISON.
			sch := pgx.Identifier{s.Schema}.Sanitize()
			_, err = e.admin.Exec(ctx, `CREATE OR REPLACE FUNCTION `+sch+`.reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN IF NEW.content LIKE '%POISON%' THEN RAISE EXCEPTION 'poisoned chunk'; END IF; RETURN NEW; END $$;
				CREATE OR REPLACE TRIGGER reject_poison BEFORE INSERT ON `+sch+`.chunks
				FOR EACH ROW EXECUTE FUNCTION `+sch+`.reject_poison()`)
			require.NoError(t, err)
			t.Cleanup(func() { _, _ = e.admin.Exec(context.Background(), `DROP TRIGGER reject_poison ON `+sch+`.chunks`) })

			_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "v2", DocumentType: "text",
				IDAtOrigin: "atomic", Content: longText("replacement", 300) + " POISON"})
			require.ErrorContains(t, err, "poisoned chunk")

			got, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: v1.DocumentID, IncludeChunks: true})
			require.NoError(t, err)
			require.Equal(t, "v1", got.DocumentName)
			require.Equal(t, before, chunkIDs(t, eng, s, v1.DocumentID))
			require.True(t, got.UpdatedAt.Equal(v1.UpdatedAt))
		})
	}
}

func TestConcurrentUpsertsOfOneDocument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	s := e.tenant(t, registry.TierShared)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprintf("v%d", i),
				DocumentType: "text", IDAtOrigin: "hot", Content: longText(fmt.Sprintf("version%d", i), 400)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	list, err := eng.ListDocuments(ctx, s, memory.DocumentListParams{})
	require.NoError(t, err)
	require.Equal(t, 1, list.Total)
	d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: list.Documents[0].DocumentID, IncludeChunks: true})
	require.NoError(t, err)
	// Every chunk belongs to the version whose name the document carries.
	want := "version" + d.DocumentName[1:]
	for _, c := range d.Chunks {
		require.Contains(t, c.Content, want)
	}
}

func TestListDocuments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			names := []string{"charlie", "alpha", "echo", "bravo", "delta"}
			for i, n := range names {
				typ := "text"
				if i%2 == 1 {
					typ = "markdown"
				}
				_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: n, DocumentType: typ,
					IDAtOrigin: "o-" + n, Content: "content of " + n,
					Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d,"even":%t,"tags":["x","%s"]}`, i, i%2 == 0, n))})
				require.NoError(t, err)
			}
			// Touch "charlie" so its updated_at is newest.
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "charlie", DocumentType: "text",
				IDAtOrigin: "o-charlie", Content: "content of charlie", Metadata: json.RawMessage(`{"i":0,"even":true,"tags":["x","charlie"]}`)})
			require.NoError(t, err)

			list := func(p memory.DocumentListParams) memory.DocumentListResult {
				t.Helper()
				r, err := eng.ListDocuments(ctx, s, p)
				require.NoError(t, err)
				return r
			}
			namesOf := func(r memory.DocumentListResult) []string {
				out := []string{}
				for _, d := range r.Documents {
					out = append(out, d.DocumentName)
				}
				return out
			}
			r := list(memory.DocumentListParams{})
			require.Equal(t, 5, r.Total)
			require.Equal(t, 20, r.Limit)
			require.Equal(t, []string{"delta", "bravo", "echo", "alpha", "charlie"}, namesOf(r), "created_at desc by default")
			require.Equal(t, []string{"charlie", "delta"}, namesOf(list(memory.DocumentListParams{OrderBy: "updated_at", Limit: new(2)})))
			require.Equal(t, []string{"alpha", "bravo", "charlie", "delta", "echo"}, namesOf(list(memory.DocumentListParams{OrderBy: "document_name", Order: "asc"})))
			r = list(memory.DocumentListParams{OrderBy: "document_name", Order: "asc", Limit: new(2), Offset: 2})
			require.Equal(t, []string{"charlie", "delta"}, namesOf(r))
			require.Equal(t, 5, r.Total)
			r = list(memory.DocumentListParams{Offset: 10})
			require.Empty(t, r.Documents)
			require.Equal(t, 5, r.Total, "the total survives an offset past the end")
			r = list(memory.DocumentListParams{DocumentType: "markdown", OrderBy: "document_name", Order: "asc"})
			require.Equal(t, []string{"alpha", "bravo"}, namesOf(r))
			require.Equal(t, 2, r.Total)
			require.Equal(t, []string{"echo"}, namesOf(list(memory.DocumentListParams{IDAtOrigin: "o-echo"})))
			r = list(memory.DocumentListParams{MetadataFilter: json.RawMessage(`{"even":true}`), OrderBy: "document_name", Order: "asc"})
			require.Equal(t, []string{"charlie", "delta", "echo"}, namesOf(r))
			require.Equal(t, []string{"bravo"}, namesOf(list(memory.DocumentListParams{MetadataFilter: json.RawMessage(`{"tags":["bravo"]}`)})))
			require.Empty(t, namesOf(list(memory.DocumentListParams{MetadataFilter: json.RawMessage(`{"even":true}`), DocumentType: "markdown"})))
			for _, d := range list(memory.DocumentListParams{}).Documents {
				require.Equal(t, 1, d.ChunkCount)
				require.NotNil(t, d.IDAtOrigin)
			}
		})
	}
}

func TestDeleteAndStatistics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			st, err := eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, memory.Statistics{DocumentTypeBreakdown: map[string]int{}}, st)

			var ids []string
			var bytes int64
			chunks := 0
			for i, typ := range []string{"text", "text", "markdown", "code", "email"} {
				content := longText(fmt.Sprintf("w%d", i), 50*(i+1))
				r, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprint(i), DocumentType: typ,
					Content: content, Metadata: json.RawMessage(fmt.Sprintf(`{"batch":%d}`, i%2))})
				require.NoError(t, err)
				ids = append(ids, r.DocumentID)
				bytes += int64(len(content))
				chunks += r.ChunksCreated
			}
			st, err = eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, memory.Statistics{DocumentCount: 5, ChunkCount: chunks, TotalSizeBytes: bytes,
				DocumentTypeBreakdown: map[string]int{"text": 2, "markdown": 1, "code": 1, "email": 1}}, st)

			require.NoError(t, eng.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: ids[0]}))
			require.ErrorIs(t, eng.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: ids[0]}), memory.ErrNotFound)
			_, err = eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: ids[0]})
			require.ErrorIs(t, err, memory.ErrNotFound)

			missing := "00000000-0000-4000-8000-000000000000"
			res, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{DocumentIDs: []string{ids[1], ids[0], missing, ids[1]}})
			require.NoError(t, err)
			require.Equal(t, memory.DocumentDeleteManyResult{DeletedCount: 1, DeletedDocumentIDs: []string{ids[1]}}, res)

			res, err = eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{MetadataFilter: json.RawMessage(`{"batch":0}`)})
			require.NoError(t, err)
			require.ElementsMatch(t, []string{ids[2], ids[4]}, res.DeletedDocumentIDs)
			require.Equal(t, 2, res.DeletedCount)

			st, err = eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, 1, st.DocumentCount)
			require.Equal(t, map[string]int{"code": 1}, st.DocumentTypeBreakdown)
			d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: ids[3], IncludeChunks: true})
			require.NoError(t, err)
			require.Equal(t, st.ChunkCount, len(d.Chunks), "chunks of deleted documents are gone")
		})
	}
}

// longText is n words of filler with a marker word, in sentences, so it splits into several
// chunks.
func longText(marker string, n int) string {
	words := []string{"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", marker}
	b := make([]byte, 0, n*6)
	for i := range n {
		b = append(b, words[i%len(words)]...)
		if i%12 == 11 {
			b = append(b, ". "...)
		} else {
			b = append(b, ' ')
		}
	}
	return string(b)
}

// TestIngestYieldsBetweenBatches: with a scope that yields (the router's, for fair sharing), an
// ingest is embedded and written in batches of YieldBatchSize with a yield between every two,
// the document is whole when it succeeds, and a yield that fails (the request ended) leaves
// nothing stored.
func TestIngestYieldsBetweenBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const batch = 4
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.YieldBatchSize = batch })
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			var yields int
			s.Yield = func(context.Context) error { yields++; return nil }
			res, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "big", DocumentType: "text",
				Content: longText("gamma", 6000)})
			require.NoError(t, err)
			leaves := res.EmbeddingsCreated
			require.Greater(t, res.ChunksCreated, 4*batch, "enough chunks for several batches")
			// One yield between every two embedding slices and every two insert statements.
			require.Equal(t, (leaves+batch-1)/batch-1+(res.ChunksCreated+batch-1)/batch-1, yields)
			require.Len(t, chunkIDs(t, eng, s, res.DocumentID), res.ChunksCreated)

			stats, err := eng.Statistics(ctx, s)
			require.NoError(t, err)
			before := stats.DocumentCount
			// The same size again: the embedding's yields come first, then the inserts'. Cut at
			// the second yield of the inserts, once a batch is written in the transaction.
			embedYields := (leaves+batch-1)/batch - 1
			calls := 0
			s.Yield = func(context.Context) error {
				calls++
				if calls == embedYields+2 {
					return context.Canceled
				}
				return nil
			}
			_, err = eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "cut", DocumentType: "text",
				Content: longText("delta", 6000)})
			require.ErrorIs(t, err, context.Canceled)
			require.Equal(t, embedYields+2, calls, "cut in the middle of the inserts")
			stats, err = eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Equal(t, before, stats.DocumentCount, "a cut ingest stores nothing")
		})
	}
}
