package memory_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/chunk"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

var modes = []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid}

func docSet(res memory.SearchResponse, names map[string]string) []string {
	set := map[string]bool{}
	for _, r := range res.Results {
		set[names[r.DocumentID]] = true
	}
	out := []string{}
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestSearchFilters applies every filter in every search mode, on the exact and on the HNSW
// vector path, in both tiers, and checks that exactly the matching documents come back.
func TestSearchFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := newBuiltin(t)
	engines := map[string]*memory.Engine{
		"exact": newEngine(t, p),
		"hnsw":  newEngine(t, p, func(c *memory.Config) { c.ExactSearchThreshold = -1 }),
	}
	day := func(m, d int) *time.Time { v := time.Date(2024, time.Month(m), d, 0, 0, 0, 0, time.UTC); return &v }
	docs := []struct {
		name, origin, typ, meta string
		date                    *time.Time
		content                 string
	}{
		{"d1", "o1", "text", `{"team":"red","n":1}`, day(1, 10), "The zebra crossed the river at dawn."},
		{"d2", "o2", "markdown", `{"team":"blue"}`, day(2, 10), "# Zebras\n\nA zebra has stripes."},
		{"d3", "o3", "email", `{"team":"red","vip":true}`, day(3, 10), "From: a@example.com\nSubject: zebra\n\nThe zebra report is attached."},
		{"d4", "o4", "chat", `{"team":"green"}`, nil, "alice: have you seen the zebra?\nbob: yes, the zebra is asleep"},
		{"d5", "", "text", `{}`, day(5, 1), "Another zebra story, without an origin id."},
	}
	for _, tier := range tiers {
		s := e.tenant(t, tier)
		other := e.tenant(t, tier) // noise in the same tier
		names := map[string]string{}
		for _, d := range docs {
			r, err := engines["exact"].AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: d.name, DocumentType: d.typ,
				IDAtOrigin: d.origin, Metadata: json.RawMessage(d.meta), DocumentDate: d.date, Content: d.content})
			require.NoError(t, err)
			names[r.DocumentID] = d.name
			_, err = engines["exact"].AddDocument(ctx, other, memory.DocumentAddParams{DocumentName: d.name, DocumentType: d.typ,
				IDAtOrigin: d.origin, Metadata: json.RawMessage(d.meta), DocumentDate: d.date, Content: d.content})
			require.NoError(t, err)
		}
		for _, tc := range []struct {
			given  string
			filter memory.SearchParams
			expect []string
		}{
			{"no filter", memory.SearchParams{}, []string{"d1", "d2", "d3", "d4", "d5"}},
			{"id_at_origin", memory.SearchParams{IDAtOrigin: "o1"}, []string{"d1"}},
			{"id_at_origins", memory.SearchParams{IDAtOrigins: []string{"o2", "o3", "missing"}}, []string{"d2", "d3"}},
			{"id_at_origin and id_at_origins", memory.SearchParams{IDAtOrigin: "o1", IDAtOrigins: []string{"o1", "o2"}}, []string{"d1"}},
			{"document_types", memory.SearchParams{DocumentTypes: []string{"text"}}, []string{"d1", "d5"}},
			{"document_types email and chat", memory.SearchParams{DocumentTypes: []string{"email", "chat"}}, []string{"d3", "d4"}},
			{"metadata", memory.SearchParams{MetadataFilter: json.RawMessage(`{"team":"red"}`)}, []string{"d1", "d3"}},
			{"metadata two keys", memory.SearchParams{MetadataFilter: json.RawMessage(`{"team":"red","vip":true}`)}, []string{"d3"}},
			{"metadata no match", memory.SearchParams{MetadataFilter: json.RawMessage(`{"team":"purple"}`)}, []string{}},
			{"date_from", memory.SearchParams{DateFrom: day(2, 1)}, []string{"d2", "d3", "d5"}},
			{"date_to inclusive", memory.SearchParams{DateTo: day(2, 10)}, []string{"d1", "d2"}},
			{"date range", memory.SearchParams{DateFrom: day(2, 10), DateTo: day(3, 10)}, []string{"d2", "d3"}},
			{"type and date", memory.SearchParams{DocumentTypes: []string{"text"}, DateFrom: day(2, 1)}, []string{"d5"}},
		} {
			for path, eng := range engines {
				for _, mode := range modes {
					t.Run(fmt.Sprintf("%s/%s/%s/%s", tier, tc.given, mode, path), func(t *testing.T) {
						p := tc.filter
						p.QueryText, p.SearchType, p.Limit = "zebra", mode, new(100)
						res, err := eng.Search(ctx, s, p)
						require.NoError(t, err)
						require.Equal(t, tc.expect, docSet(res, names))
					})
				}
			}
		}
	}
}

// TestSearchNeverShortOnSharedIndex: in the shared tier a small tenant next to a large one gets
// all of its chunks back even when the HNSW iterative scan is cut off after one tuple: the
// engine falls back to an exact scan instead of returning a short list.
func TestSearchNeverShortOnSharedIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.ExactSearchThreshold = -1; c.MaxScanTuples = 1 })
	big, small := e.tenant(t, registry.TierShared), e.tenant(t, registry.TierShared)
	for i := range 150 {
		_, err := eng.AddDocument(ctx, big, memory.DocumentAddParams{DocumentName: "b", DocumentType: "text",
			Content: fmt.Sprintf("report number %d about quarterly numbers", i)})
		require.NoError(t, err)
	}
	for i := range 3 {
		_, err := eng.AddDocument(ctx, small, memory.DocumentAddParams{DocumentName: "s", DocumentType: "text",
			Content: fmt.Sprintf("small tenant note %d", i)})
		require.NoError(t, err)
	}
	res, err := eng.Search(ctx, small, memory.SearchParams{QueryText: "report about quarterly numbers", SearchType: memory.SearchVector})
	require.NoError(t, err)
	require.Len(t, res.Results, 3)
	res, err = eng.Search(ctx, big, memory.SearchParams{QueryText: "report about quarterly numbers", SearchType: memory.SearchVector, Limit: new(100)})
	require.NoError(t, err)
	require.Len(t, res.Results, 100)
}

// TestSearchScores: one comparable score per list: cosine similarity (vector), normalised text
// rank (text), fused rank normalised to (0, 1] (hybrid), best first; alpha 1 and 0 reduce
// hybrid to the vector and the text order.
func TestSearchScores(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, k := range []int{60, 5} {
		eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.RRFK = k })
		s := e.tenant(t, registry.TierSchema)
		for i, c := range []string{
			"solar panels convert sunlight into electricity",
			"solar energy storage with batteries",
			"wind turbines generate electricity",
			"electricity prices rose this winter",
			"sunlight and vitamin D",
			"battery chemistry and lithium",
		} {
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprint(i), DocumentType: "text", Content: c})
			require.NoError(t, err)
		}
		q := "solar electricity"
		search := func(mode string, alpha *float64) memory.SearchResponse {
			t.Helper()
			r, err := eng.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: mode, Alpha: alpha, Fusion: memory.FusionRRF})
			require.NoError(t, err)
			require.Equal(t, mode, r.SearchType)
			require.NotEmpty(t, r.Results)
			for i, x := range r.Results {
				require.LessOrEqual(t, x.Score, 1.0)
				if i > 0 {
					require.LessOrEqual(t, x.Score, r.Results[i-1].Score, "best first")
				}
			}
			return r
		}
		chunkIDs := ids
		vec := search(memory.SearchVector, nil)
		for _, x := range vec.Results {
			require.Equal(t, *x.Similarity, x.Score)
			require.Nil(t, x.TextRank)
			require.Nil(t, x.RRFScore)
		}
		txt := search(memory.SearchText, nil)
		for _, x := range txt.Results {
			require.Equal(t, *x.TextRank, x.Score)
			require.Greater(t, x.Score, 0.0)
			require.Less(t, x.Score, 1.0)
			require.Nil(t, x.Similarity)
		}
		require.Len(t, txt.Results, 4, "any word matches (OR); BM25 ranks")
		require.Contains(t, txt.Results[0].Content, "solar panels", "the one chunk with both words ranks first")
		hyb := search(memory.SearchHybrid, nil)
		top := hyb.Results[0]
		require.Equal(t, txt.Results[0].ChunkID, top.ChunkID)
		require.Equal(t, vec.Results[0].ChunkID, top.ChunkID)
		require.InDelta(t, 1.0, top.Score, 1e-12, "first on both sides")
		for _, x := range hyb.Results {
			require.NotNil(t, x.Similarity)
			// text_rank is set for the text leg's candidates (the chunks matching a word), null
			// for chunks only the vector leg found.
			require.Equal(t, strings.Contains(x.Content, "solar") || strings.Contains(x.Content, "electricity"), x.TextRank != nil, x.Content)
			require.InDelta(t, *x.RRFScore*float64(k+1), x.Score, 1e-12)
		}
		// Score fusion (the default): min-max normalised scores, 1 for the chunk first on both legs.
		sf, err := eng.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: memory.SearchHybrid})
		require.NoError(t, err)
		require.Equal(t, top.ChunkID, sf.Results[0].ChunkID)
		require.InDelta(t, 1.0, sf.Results[0].Score, 1e-12)
		for i, x := range sf.Results {
			require.Nil(t, x.RRFScore)
			if i > 0 {
				require.LessOrEqual(t, x.Score, sf.Results[i-1].Score)
			}
		}
		require.Equal(t, chunkIDs(vec), chunkIDs(search(memory.SearchHybrid, new(1.0))), "alpha 1 is the vector order")
		require.Equal(t, chunkIDs(txt), chunkIDs(search(memory.SearchHybrid, new(0.0))), "alpha 0 is the text order")
	}
}

// TestParentContext: hits are leaf chunks; include_parent_context returns each hit's parent
// (which contains it), and a top-level leaf has none.
func TestParentContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			long, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "long", DocumentType: "text",
				Content: longText("aurora", 2000)})
			require.NoError(t, err)
			short, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "short", DocumentType: "text",
				Content: "a short aurora note"})
			require.NoError(t, err)
			levels := map[string]int{}
			for _, id := range []string{long.DocumentID, short.DocumentID} {
				d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: id, IncludeChunks: true})
				require.NoError(t, err)
				for _, c := range d.Chunks {
					levels[c.ChunkID] = c.ChunkLevel
				}
			}
			for _, mode := range modes {
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "aurora", SearchType: mode, Limit: new(100),
					IncludeParentContext: true, IncludeDocuments: true})
				require.NoError(t, err)
				requireAllButNested(t, eng, s, res.Results, []string{long.DocumentID, short.DocumentID})
				for _, r := range res.Results {
					require.Equal(t, 0, levels[r.ChunkID], "only leaves are hits")
					require.NotEmpty(t, r.DocumentType)
					require.NotNil(t, r.DocumentMetadata)
					if r.DocumentID == short.DocumentID {
						require.Empty(t, r.ParentChunks)
						continue
					}
					require.Len(t, r.ParentChunks, 1)
					parent := r.ParentChunks[0]
					require.Equal(t, 1, parent.ChunkLevel)
					require.Contains(t, parent.Content, r.Content)
					require.Less(t, parent.ChunkIndex, r.ChunkIndex)
				}
				res, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "aurora", SearchType: mode})
				require.NoError(t, err)
				for _, r := range res.Results {
					require.Nil(t, r.ParentChunks)
					require.Empty(t, r.DocumentType)
				}
			}
		})
	}
}

// TestChunkers stores a document of every type and checks the stored tree: indexes in order,
// parents of level 1 before their children, leaves embedded and parents not, no child equal to
// its parent, hashes right, type-specific chunk metadata kept, and a leaf findable by search.
func TestChunkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t))
	samples := map[string]struct {
		content, metaKey, query string
	}{
		"markdown": {"# Guide\n\nIntro text.\n\n## Setup\n\n" + longText("install", 700) + "\n\n## Usage\n\nRun the quasar command.", "section", "quasar"},
		"email": {"From: alice@example.com\nTo: bob@example.com\nSubject: Budget\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\n" +
			"Hi Bob,\n\nThe budget for the nebula project is approved. " + longText("budget", 400) + "\n\n" +
			"On Sun, 31 Dec 2023, Bob wrote:\n> Is the budget approved?\n> Thanks\n\n--\nAlice\nCFO", "email_part", "nebula"},
		"chat": {chatTranscript(60), "speakers", "comet"},
		"code": {strings.Repeat("func handler() error {\n\treturn nil\n}\n\n", 150) + "// pulsar marker\n", "", "pulsar"},
	}
	for _, typ := range chunk.DocumentTypes() {
		sample, ok := samples[typ]
		if !ok {
			sample.content, sample.query = longText("galaxy", 1500), "galaxy"
		}
		for _, tier := range tiers {
			t.Run(typ+"/"+string(tier), func(t *testing.T) {
				s := e.tenant(t, tier)
				add, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: typ, DocumentType: typ, Content: sample.content})
				require.NoError(t, err)
				d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: add.DocumentID, IncludeChunks: true})
				require.NoError(t, err)
				require.Len(t, d.Chunks, add.ChunksCreated)
				require.Greater(t, add.ChunksCreated, 1, "the sample is long enough for several chunks")
				byID := map[string]memory.Chunk{}
				leaves, metaSeen := 0, false
				for i, c := range d.Chunks {
					require.Equal(t, i, c.ChunkIndex)
					sum := sha256.Sum256([]byte(c.Content))
					require.Equal(t, hex.EncodeToString(sum[:]), c.ContentHash)
					require.Equal(t, c.ChunkLevel == 0, c.HasEmbedding)
					if c.ParentChunkID != nil {
						parent, ok := byID[*c.ParentChunkID]
						require.True(t, ok, "parent comes first")
						require.Equal(t, 1, parent.ChunkLevel)
						require.Equal(t, 0, c.ChunkLevel)
						require.NotEqual(t, parent.Content, c.Content, "no child repeats its parent")
					}
					if c.ChunkLevel == 0 {
						leaves++
					}
					var md map[string]any
					require.NoError(t, json.Unmarshal(c.Metadata, &md))
					if _, ok := md[sample.metaKey]; ok {
						metaSeen = true
					}
					byID[c.ChunkID] = c
				}
				require.Equal(t, add.EmbeddingsCreated, leaves)
				if sample.metaKey != "" {
					require.True(t, metaSeen, "chunk metadata %q kept", sample.metaKey)
				}
				res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: sample.query, SearchType: memory.SearchHybrid, Limit: new(3)})
				require.NoError(t, err)
				require.NotEmpty(t, res.Results)
				require.Contains(t, strings.ToLower(res.Results[0].Content), sample.query)
			})
		}
	}
}

func chatTranscript(n int) string {
	var b strings.Builder
	speakers := []string{"alice", "bob", "carol"}
	for i := range n {
		fmt.Fprintf(&b, "[10:%02d] %s: message %d about the launch schedule and the checklist\n", i%60, speakers[i%3], i)
		if i == n/2 {
			fmt.Fprintf(&b, "[11:00] bob: the comet is visible tonight\n")
		}
	}
	return b.String()
}

// TestSearchHistory: every search is recorded with its type, filters, result count and
// latency, read back newest first, and pruned to the newest HistoryMaxRows and HistoryMaxAge.
func TestSearchHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.HistoryMaxRows = 3; c.HistoryMaxAge = 24 * time.Hour })
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s, other := e.tenant(t, tier), e.tenant(t, tier)
			_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "history of rome"})
			require.NoError(t, err)
			_, err = eng.Search(ctx, other, memory.SearchParams{QueryText: "other tenant"})
			require.NoError(t, err)
			for i, mode := range []string{"text", "vector", "hybrid", "text", "hybrid"} {
				_, err := eng.Search(ctx, s, memory.SearchParams{QueryText: fmt.Sprintf("rome %d", i), SearchType: mode,
					DocumentTypes: []string{"text"}, MetadataFilter: json.RawMessage(`{"a":1}`)})
				require.NoError(t, err)
			}
			_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "rome", SearchType: "text", Limit: new(5)})
			require.NoError(t, err)
			hist, err := eng.SearchHistory(ctx, s, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			require.Len(t, hist, 3, "pruned to HistoryMaxRows")
			require.Equal(t, []string{"rome", "rome 4", "rome 3"}, []string{hist[0].QueryText, hist[1].QueryText, hist[2].QueryText})
			require.Equal(t, "text", hist[0].SearchType)
			require.Equal(t, 1, hist[0].ResultCount)
			require.Positive(t, hist[0].LatencyMS)
			require.JSONEq(t, `{"limit":5}`, string(hist[0].Filters))
			require.JSONEq(t, `{"limit":10,"alpha":0.1,"document_types":["text"],"metadata_filter":{"a":1}}`, string(hist[1].Filters))
			require.Greater(t, hist[0].SearchID, hist[1].SearchID)
			one, err := eng.SearchHistory(ctx, s, memory.SearchHistoryListParams{Limit: new(1)})
			require.NoError(t, err)
			require.Equal(t, hist[:1], one)

			// Rows older than HistoryMaxAge are neither returned nor kept.
			_, err = e.admin.Exec(ctx, `UPDATE `+s.Schema+`.search_history SET created_at = now() - interval '2 days' WHERE owner_id = $1`, s.OwnerID)
			require.NoError(t, err)
			hist, err = eng.SearchHistory(ctx, s, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			require.Empty(t, hist)
			_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "fresh"})
			require.NoError(t, err)
			var rows int
			require.NoError(t, e.admin.QueryRow(ctx, `SELECT count(*) FROM `+s.Schema+`.search_history WHERE owner_id = $1`, s.OwnerID).Scan(&rows))
			require.Equal(t, 1, rows)
			hist, err = eng.SearchHistory(ctx, other, memory.SearchHistoryListParams{})
			require.NoError(t, err)
			require.Len(t, hist, 1, "another tenant's history is its own")
		})
	}
}

func TestQueryEmbeddingFromClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := &flakyProvider{Provider: newBuiltin(t)}
	eng := newEngine(t, p)
	s := e.tenant(t, registry.TierShared)
	_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "a", DocumentType: "text", Content: "granite countertops"})
	require.NoError(t, err)
	q, err := p.Provider.Embed(ctx, []string{"granite"})
	require.NoError(t, err)
	p.setDown(true) // a client-supplied embedding needs no provider
	for _, mode := range []string{memory.SearchVector, memory.SearchHybrid} {
		res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "granite", QueryEmbedding: q[0], SearchType: mode})
		require.NoError(t, err)
		require.Len(t, res.Results, 1)
		require.False(t, res.Degraded)
		require.False(t, math.IsNaN(*res.Results[0].Similarity))
	}
}

// requireAllButNested checks result hygiene on a search that matched every leaf of docs with a
// large limit: every leaf is returned except those lying wholly inside (or around) a returned
// chunk of the same document, and no returned chunk lies inside another.
func requireAllButNested(t *testing.T, eng *memory.Engine, s memory.Scope, results []memory.SearchResult, docs []string) {
	t.Helper()
	type span struct {
		doc, id    string
		start, end int
	}
	spanOf := func(doc string, c memory.Chunk) span {
		var m struct{ Start, End int }
		require.NoError(t, json.Unmarshal(c.Metadata, &m))
		return span{doc, c.ChunkID, m.Start, m.End}
	}
	var leaves []span
	for _, id := range docs {
		d, err := eng.GetDocument(context.Background(), s, memory.DocumentGetParams{DocumentID: id, IncludeChunks: true})
		require.NoError(t, err)
		for _, c := range d.Chunks {
			if c.ChunkLevel == 0 {
				leaves = append(leaves, spanOf(id, c))
			}
		}
	}
	returned := map[string]span{}
	for _, r := range results {
		for _, l := range leaves {
			if l.id == r.ChunkID {
				returned[l.id] = l
			}
		}
	}
	nested := func(a, b span) bool {
		return a.doc == b.doc && a.id != b.id && ((a.start >= b.start && a.end <= b.end) || (b.start >= a.start && b.end <= a.end))
	}
	for _, a := range returned {
		for _, b := range returned {
			require.False(t, nested(a, b), "returned chunks %v and %v are nested", a, b)
		}
	}
	for _, l := range leaves {
		if _, ok := returned[l.id]; ok {
			continue
		}
		found := false
		for _, r := range returned {
			found = found || nested(l, r)
		}
		require.True(t, found, "leaf %v is missing and not nested in a returned chunk", l)
	}
}
