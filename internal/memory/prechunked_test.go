package memory_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func intp(i int) *int { return &i }

// TestPrechunkedDocumentsWithClientVectors: chunks with the client's vectors are stored as given
// and searched like any other; chunks without are embedded; with DeferEmbedding they are queued.
func TestPrechunkedDocumentsWithClientVectors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	emb := newBuiltin(t)
	engine := newEngine(t, emb)
	for _, tier := range tiers {
		s := e.tenant(t, tier)
		texts := []string{"We deploy on Tuesdays after the database backup.", "Rollbacks revert the release tag.", "Lunch is at noon."}
		vecs, err := emb.Embed(ctx, texts)
		require.NoError(t, err)
		// Skew one client vector, so the test can see it was used as given.
		vecs[2] = append([]float32(nil), vecs[0]...)

		res, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{
			DocumentName: "Runbook", DocumentType: "markdown", IDAtOrigin: "rb-1",
			Chunks: []memory.ChunkInput{
				{Content: "Deploys and rollbacks", Level: 1},
				{Content: texts[0], Embedding: vecs[0], Parent: intp(0), Metadata: json.RawMessage(`{"section": "deploys"}`)},
				{Content: texts[1], Parent: intp(0)}, // embedded by the engine
				{Content: texts[2], Embedding: vecs[2]},
			},
		})
		require.NoError(t, err)
		require.True(t, res.Created)
		require.Equal(t, 4, res.ChunksCreated)
		require.Equal(t, 3, res.EmbeddingsCreated)
		require.Zero(t, res.EmbeddingsPending)

		doc, err := engine.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: res.DocumentID, IncludeChunks: true})
		require.NoError(t, err)
		require.EqualValues(t, len(texts[0])+len(texts[1])+len(texts[2]), doc.ContentBytes, "a document's size is its leaves'")
		require.Len(t, doc.Chunks, 4)
		require.Equal(t, 1, doc.Chunks[0].ChunkLevel)
		require.False(t, doc.Chunks[0].HasEmbedding)
		require.Equal(t, doc.Chunks[0].ChunkID, *doc.Chunks[1].ParentChunkID)
		require.JSONEq(t, `{"section": "deploys"}`, string(doc.Chunks[1].Metadata))
		for _, c := range doc.Chunks[1:] {
			require.True(t, c.HasEmbedding)
		}

		// Vector search with the first text finds chunk 1 and the skewed chunk 3 at similarity 1.
		out, err := engine.Search(ctx, s, memory.SearchParams{QueryText: texts[0], SearchType: memory.SearchVector})
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(out.Results), 2)
		for _, r := range out.Results[:2] {
			require.InDelta(t, 1.0, *r.Similarity, 1e-6, r.Content)
			require.Contains(t, []string{texts[0], texts[2]}, r.Content)
		}
		// The text index has them too, parents included as context.
		out, err = engine.Search(ctx, s, memory.SearchParams{QueryText: "rollbacks release", SearchType: memory.SearchText,
			IncludeParentContext: true})
		require.NoError(t, err)
		require.Equal(t, texts[1], out.Results[0].Content)
		require.Equal(t, "Deploys and rollbacks", out.Results[0].ParentChunks[0].Content)

		// Deferred: nothing embedded, everything without a client vector queued.
		res, err = engine.AddDocument(ctx, s, memory.DocumentAddParams{
			DocumentName: "Later", DocumentType: "text", DeferEmbedding: true,
			Chunks: []memory.ChunkInput{{Content: "queued one"}, {Content: "given", Embedding: vecs[1]}},
		})
		require.NoError(t, err)
		require.Equal(t, 1, res.EmbeddingsCreated)
		require.Equal(t, 1, res.EmbeddingsPending)
		st, err := engine.EmbeddingStats(ctx, s)
		require.NoError(t, err)
		require.Equal(t, 1, st.Pending)
	}
}

func TestPrechunkedBadInputNamesTheField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	engine := newEngine(t, newBuiltin(t))
	s := e.tenant(t, registry.TierShared)
	good := make([]float32, testDim)
	good[0] = 1
	with := func(i int, f float32) []float32 {
		v := append([]float32(nil), good...)
		v[i] = f
		return v
	}
	for _, tc := range []struct {
		name   string
		p      memory.DocumentAddParams
		field  string
		msg    string
		tooBig bool
	}{
		{"both", memory.DocumentAddParams{Content: "x", Chunks: []memory.ChunkInput{{Content: "y"}}}, "chunks", "not both", false},
		{"none", memory.DocumentAddParams{Chunks: []memory.ChunkInput{}}, "chunks", "at least one", false},
		{"chunking", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "y"}}, Chunking: memory.ChunkingOptions{ChildSize: 50}}, "chunking", "does not apply", false},
		{"blank", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "ok"}, {Content: " \n"}}}, "chunks[1].content", "empty", false},
		{"nul", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a\x00b"}}}, "chunks[0].content", "NUL", false},
		{"short vector", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Embedding: good[:10]}}}, "chunks[0].embedding", "has 10 values; this deployment's embeddings have 64", false},
		{"long vector", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a"}, {Content: "b", Embedding: append(good, 1)}}}, "chunks[1].embedding", "has 65 values", false},
		{"nan", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Embedding: with(7, float32(math.NaN()))}}}, "chunks[0].embedding[7]", "NaN", false},
		{"inf", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Embedding: with(3, float32(math.Inf(-1)))}}}, "chunks[0].embedding[3]", "infinite", false},
		{"zero", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Embedding: make([]float32, testDim)}}}, "chunks[0].embedding", "all zeros", false},
		{"parent vector", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Level: 1, Embedding: good}}}, "chunks[0].embedding", "only leaves", false},
		{"parent later", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Parent: intp(1)}, {Content: "b", Level: 1}}}, "chunks[0].parent", "earlier chunk", false},
		{"parent level", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a"}, {Content: "b", Parent: intp(0)}}}, "chunks[1].parent", "level must be higher", false},
		{"metadata", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: "a", Metadata: json.RawMessage(`[1]`)}}}, "chunks[0].metadata", "JSON object", false},
		{"too many", memory.DocumentAddParams{Chunks: make([]memory.ChunkInput, memory.MaxChunksPerRequest+1)}, "chunks", "at most", true},
		{"too much text", memory.DocumentAddParams{Chunks: []memory.ChunkInput{{Content: strings.Repeat("a", 6<<20)}, {Content: strings.Repeat("b", 6<<20)}}}, "chunks[1].content", "more than", true},
	} {
		tc.p.DocumentName, tc.p.DocumentType = "doc", "text"
		_, err := engine.AddDocument(ctx, s, tc.p)
		var ve *memory.ValidationError
		require.ErrorAs(t, err, &ve, tc.name)
		require.Equal(t, tc.field, ve.Field, tc.name)
		require.Contains(t, ve.Message, tc.msg, tc.name)
		require.Equal(t, tc.tooBig, ve.TooLarge, tc.name)
	}
	st, err := engine.Statistics(ctx, s)
	require.NoError(t, err)
	require.Zero(t, st.DocumentCount, "nothing was written")
}
