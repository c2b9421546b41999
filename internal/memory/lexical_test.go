package memory_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

var lexicalDocs = []string{
	"Tuesday deploys wait for the nightly database backup to finish.",
	"The backup job compresses the database dump and uploads it.",
	"Deploys are frozen during the holidays.",
	"Our office plants need water on Fridays.",
	"The database migration runs before every deploy.",
}

func addAll(t *testing.T, eng *memory.Engine, s memory.Scope, docs []string) {
	t.Helper()
	for i, d := range docs {
		_, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: fmt.Sprint(i),
			DocumentType: "text", Content: d})
		require.NoError(t, err)
	}
}

func textScores(t *testing.T, eng *memory.Engine, s memory.Scope, q string) map[string]float64 {
	t.Helper()
	res, err := eng.Search(context.Background(), s, memory.SearchParams{QueryText: q, SearchType: memory.SearchText, Limit: new(100)})
	require.NoError(t, err)
	out := map[string]float64{}
	for _, r := range res.Results {
		out[r.Content] = r.Score
	}
	return out
}

// TestTermStatisticsArePerTenant: in the shared tier, another tenant's documents do not change a
// tenant's text scores (document frequencies, counts and lengths are the tenant's own), and a
// schema-tier tenant with the same documents gets the same scores.
func TestTermStatisticsArePerTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	a, other := e.tenant(t, registry.TierShared), e.tenant(t, registry.TierShared)
	own := e.tenant(t, registry.TierSchema)
	addAll(t, eng, a, lexicalDocs)
	addAll(t, eng, own, lexicalDocs)
	const q = "database backup deploy"
	before := textScores(t, eng, a, q)
	require.Len(t, before, 4)
	// The other tenant floods the shared tables with the query's words, which would make them
	// common (low IDF) and change the length normalisation if statistics were shared.
	var flood []string
	for i := range 60 {
		flood = append(flood, fmt.Sprintf("database database backup %d deploy deploy deploy and a much longer text about nothing in particular", i))
	}
	addAll(t, eng, other, flood)
	require.Equal(t, before, textScores(t, eng, a, q), "another tenant's documents changed the scores")
	require.Equal(t, before, textScores(t, eng, own, q), "the schema tier scores the same documents the same")
	// Below LexicalDepth postings per term the bounded read is exact: the same as reading all.
	all := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.LexicalDepth = -1 })
	require.Equal(t, before, textScores(t, all, a, q))
	// Deleting documents keeps the statistics in step: after deleting and re-adding one
	// document the scores are the same again.
	res, err := eng.Search(ctx, a, memory.SearchParams{QueryText: "office plants", SearchType: memory.SearchText})
	require.NoError(t, err)
	require.NoError(t, eng.DeleteDocument(ctx, a, memory.DocumentDeleteParams{DocumentID: res.Results[0].DocumentID}))
	require.NotEqual(t, before, textScores(t, eng, a, q), "one document fewer changes N")
	addAll(t, eng, a, lexicalDocs[3:4])
	require.Equal(t, before, textScores(t, eng, a, q))
}

// TestLexicalSyntax: words are alternatives ranked by BM25, quoted phrases are required, -word
// and -"phrase" exclude, and queries with nothing to search for are refused naming query_text.
func TestLexicalSyntax(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			addAll(t, eng, s, lexicalDocs)
			for _, tc := range []struct {
				given string
				want  []string // contents, in order, or the first ones when prefix is set
				n     int
			}{
				{`backup unicorn`, []string{lexicalDocs[1], lexicalDocs[0]}, 2},              // one word missing: still found
				{`"database backup"`, []string{lexicalDocs[0]}, 1},                           // phrase required
				{`database -backup`, []string{lexicalDocs[4]}, 1},                            // excluded word
				{`deploys -"nightly database"`, []string{lexicalDocs[2], lexicalDocs[4]}, 2}, // excluded phrase
				{`"deploys are frozen`, []string{lexicalDocs[2]}, 1},                         // unbalanced quote: phrase to the end
				{`plants or water`, []string{lexicalDocs[3]}, 1},
			} {
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: tc.given, SearchType: memory.SearchText})
				require.NoError(t, err, tc.given)
				require.Len(t, res.Results, tc.n, tc.given)
				for i, w := range tc.want {
					require.Equal(t, w, res.Results[i].Content, tc.given)
				}
			}
			for _, q := range []string{"the of and", `- or "" -`, `-backup`, `""`} {
				_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: memory.SearchText})
				var ve *memory.ValidationError
				require.True(t, errors.As(err, &ve), "%q: %v", q, err)
				require.Equal(t, "query_text", ve.Field)
				// Hybrid answers from the vector side instead.
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: memory.SearchHybrid})
				if q == `- or "" -` || q == `""` {
					continue // nothing to embed either: the embedder still answers, results may be anything
				}
				require.NoError(t, err, q)
				require.NotNil(t, res.Results)
			}
			long := ""
			for len([]rune(long)) < memory.DefaultMaxQueryChars-10 {
				long += "database "
			}
			res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: long, SearchType: memory.SearchHybrid})
			require.NoError(t, err)
			require.NotEmpty(t, res.Results)
		})
	}
}

// TestTextSearchConfigPerTenant: a tenant created with the simple configuration indexes and
// queries without stemming or stop words; the default (english) stems.
func TestTextSearchConfigPerTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "mixed", Tier: registry.TierShared, TextSearchConfig: "simple"})
	require.NoError(t, err)
	require.Equal(t, "simple", res.Tenant.TextSearchConfig)
	simple := memory.Scope{Pool: e.router, Schema: res.Tenant.SchemaName, OwnerID: "mixed", TextConfig: "simple", StatementTimeout: time.Minute}
	english := e.tenant(t, registry.TierShared)
	for _, s := range []memory.Scope{simple, english} {
		addAll(t, eng, s, []string{"Die Katzen schlafen. The cats are running."})
	}
	count := func(s memory.Scope, q string) int {
		r, err := eng.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: memory.SearchText})
		if err != nil {
			return -1
		}
		return len(r.Results)
	}
	require.Equal(t, 1, count(english, "run"), "english stems running to run")
	require.Equal(t, 0, count(simple, "run"), "simple does not stem")
	require.Equal(t, 1, count(simple, "die"), "simple keeps every word")
	require.Equal(t, 1, count(simple, "the"), "simple has no stop words")
	require.Equal(t, -1, count(english, "the"), "english drops stop words: nothing to search for")
	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "bad", Tier: registry.TierShared, TextSearchConfig: "klingon"})
	var fe *registry.FieldError
	require.True(t, errors.As(err, &fe), "%v", err)
	require.Equal(t, "text_search_config", fe.Field)
}

// TestChunkMetadataFilter: chunk_metadata_filter matches the chunk's own metadata (here the
// email chunker's email_part), metadata_filter the document's, in every mode.
func TestChunkMetadataFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	s := e.tenant(t, registry.TierShared)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "m", DocumentType: "text",
		Content: "alpha beta gamma", Metadata: json.RawMessage(`{"team": "ops"}`)})
	require.NoError(t, err)
	for _, mode := range modes {
		res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "alpha", SearchType: mode,
			ChunkMetadataFilter: json.RawMessage(`{"start": 0}`)})
		require.NoError(t, err)
		require.Len(t, res.Results, 1, mode)
		res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "alpha", SearchType: mode,
			ChunkMetadataFilter: json.RawMessage(`{"team": "ops"}`)})
		require.NoError(t, err)
		require.Empty(t, res.Results, "%s: document metadata is not chunk metadata", mode)
		res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "alpha", SearchType: mode,
			MetadataFilter: json.RawMessage(`{"team": "ops"}`), ChunkMetadataFilter: json.RawMessage(`{"start": 0}`)})
		require.NoError(t, err)
		require.Len(t, res.Results, 1, mode)
	}
}

// fakeReranker scores documents by a function, or fails.
type fakeReranker struct {
	score func(q, d string) float64
	err   error
	n     int // scores to return when not len(documents)
}

func (f *fakeReranker) Name() string { return "fake" }

func (f *fakeReranker) Rerank(ctx context.Context, q string, docs []string) ([]float64, error) {
	if f.err != nil {
		return nil, f.err
	}
	out := make([]float64, len(docs))
	for i, d := range docs {
		out[i] = f.score(q, d)
	}
	if f.n > 0 {
		out = out[:f.n]
	}
	return out, nil
}

// TestRerank: the reranker's order wins within rerank_top_k; a failing or garbage reranker leaves
// the unreranked order, marked degraded; bad rerank_top_k is 400.
func TestRerank(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	rr := &fakeReranker{score: func(_, d string) float64 { return float64(len(d)) }}
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.Reranker = rr })
	s := e.tenant(t, registry.TierSchema)
	addAll(t, eng, s, lexicalDocs)
	base, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "database deploy backup", SearchType: memory.SearchHybrid})
	require.NoError(t, err)
	res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "database deploy backup", SearchType: memory.SearchHybrid, Rerank: true})
	require.NoError(t, err)
	require.False(t, res.Degraded)
	require.Len(t, res.Results, len(base.Results))
	for i := 1; i < len(res.Results); i++ {
		require.GreaterOrEqual(t, len(res.Results[i-1].Content), len(res.Results[i].Content), "reranked by the fake's score")
		require.NotNil(t, res.Results[i].RerankScore)
	}
	for _, bad := range []*fakeReranker{{err: errors.New("timeout")}, {score: rr.score, n: 1}} {
		fe := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.Reranker = bad })
		res, err := fe.Search(ctx, s, memory.SearchParams{QueryText: "database deploy backup", SearchType: memory.SearchHybrid, Rerank: true})
		require.NoError(t, err)
		require.True(t, res.Degraded)
		require.Equal(t, []string{memory.DegradedRerank}, res.DegradedReasons)
		require.Equal(t, ids(base), ids(res), "the unreranked order")
	}
	for _, p := range []memory.SearchParams{
		{QueryText: "x", Rerank: true, RerankTopK: new(memory.MaxRerankTopK + 1)},
		{QueryText: "x", Rerank: true, RerankTopK: new(0)},
		{QueryText: "x", RerankTopK: new(5)},
	} {
		_, err := eng.Search(ctx, s, p)
		var ve *memory.ValidationError
		require.True(t, errors.As(err, &ve), "%v", err)
		require.Equal(t, "rerank_top_k", ve.Field)
	}
	_, err = newEngine(t, newBuiltin(t)).Search(ctx, s, memory.SearchParams{QueryText: "x", Rerank: true})
	var ve *memory.ValidationError
	require.True(t, errors.As(err, &ve))
	require.Equal(t, "rerank", ve.Field)
}

func ids(r memory.SearchResponse) []string {
	out := make([]string, len(r.Results))
	for i, x := range r.Results {
		out[i] = x.ChunkID
	}
	return out
}
