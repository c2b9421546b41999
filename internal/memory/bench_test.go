package memory_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Benchmarks. Plain `go test` runs none of them. The small ones run with -bench; the large ones
// (100k chunks, the 200k-chunk shared-tier recall table) also need TENANTMEM_BENCH_LARGE=1.
// See docs/benchmarks.md for the commands and the figures.

// benchDim is the embedding dimension of the benchmarks: the builtin embedder's default, and
// that of common small sentence models.
const benchDim = 384

func largeBenchmarks(b *testing.B) {
	b.Helper()
	if os.Getenv("TENANTMEM_BENCH_LARGE") != "1" {
		b.Skip("set TENANTMEM_BENCH_LARGE=1 to run the large benchmarks")
	}
}

// vocabulary is a fixed list of words; texts draw from it with a Zipf distribution, so a few
// words are common and most are rare, as in prose. As in English, the 40 most frequent words
// are stop words (which the 'english' text search configuration drops); the other 4,960 are
// pseudo-words.
var vocabulary = func() []string {
	r := rand.New(rand.NewPCG(1, 2))
	const letters = "abcdefghijklmnopqrstuvwxyz"
	out := strings.Fields(`the of and to a in is it that for was on are as with be at by this have from or an were
		but not which they their will would there been has had its more can if into`)
	seen := map[string]bool{}
	for _, w := range out {
		seen[w] = true
	}
	for len(out) < 5000 {
		n := 3 + r.IntN(7)
		var b strings.Builder
		for range n {
			b.WriteByte(letters[r.IntN(len(letters))])
		}
		if w := b.String(); !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}()

type textGen struct{ z *rand.Zipf }

func newTextGen(seed uint64) *textGen {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &textGen{z: rand.NewZipf(r, 1.1, 2, uint64(len(vocabulary)-1))}
}

func (g *textGen) words(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			if i%14 == 0 {
				b.WriteString(". ")
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(vocabulary[g.z.Uint64()])
	}
	return b.String()
}

// BenchmarkIngest measures AddDocument end to end with the builtin embedder: validation,
// chunking, embedding and the write transaction, for documents of about 2,000 words.
func BenchmarkIngest(b *testing.B) {
	e := newEnvDim(b, benchDim)
	p, err := embed.NewBuiltin(benchDim)
	require.NoError(b, err)
	eng := newEngine(b, p)
	ctx := context.Background()
	for _, tier := range tiers {
		b.Run("tier="+string(tier), func(b *testing.B) {
			s := e.tenant(b, tier)
			g := newTextGen(7)
			docs := make([]string, 64)
			for i := range docs {
				docs[i] = g.words(2000)
			}
			chunks, leaves := 0, 0
			b.ResetTimer()
			for i := range b.N {
				r, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprint(i), DocumentType: "text",
					Content: docs[i%len(docs)]})
				if err != nil {
					b.Fatal(err)
				}
				chunks += r.ChunksCreated
				leaves += r.EmbeddingsCreated
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(chunks)/secs, "chunks/s")
			b.ReportMetric(float64(leaves)/secs, "embedded/s")
			b.ReportMetric(float64(chunks)/float64(b.N), "chunks/doc")
		})
	}
}

// loader bulk-loads synthetic chunks with COPY as the superuser (row-level security refuses COPY
// for the router role, and a benchmark corpus is not an ingest measurement). It drops the HNSW
// index of the schema first and rebuilds it, with the migration's definition, afterwards.
type loader struct {
	pool   *pgxpool.Pool
	schema string
	docs   [][]any
	chunks [][]any
}

func newLoader(b testing.TB, e *env, schemaName string) *loader {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(e.url)
	require.NoError(b, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schemaName}.Sanitize() + ", " + schema.ExtensionSchema
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error { return pgxvec.RegisterTypes(ctx, c) }
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return &loader{pool: pool, schema: schemaName}
}

// add queues one document of chunks for owner.
func (l *loader) add(owner string, contents []string, vecs [][]float32) []string {
	docID := newTestUUID()
	l.docs = append(l.docs, []any{docID, owner, "bench", "text", int64(len(strings.Join(contents, " ")))})
	ids := make([]string, len(contents))
	for i, c := range contents {
		ids[i] = newTestUUID()
		sum := sha256.Sum256([]byte(c))
		l.chunks = append(l.chunks, []any{ids[i], docID, owner, int32(i), int16(0), c, hex.EncodeToString(sum[:]),
			int32(len(c) / 4), []byte(`{}`), pgvector.NewVector(vecs[i])})
	}
	return ids
}

func (l *loader) load(b testing.TB) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	_, err := l.pool.Exec(ctx, `DROP INDEX IF EXISTS chunks_embedding_hnsw_idx`)
	require.NoError(b, err)
	_, err = l.pool.CopyFrom(ctx, pgx.Identifier{"documents"},
		[]string{"document_id", "owner_id", "document_name", "document_type", "content_bytes"}, pgx.CopyFromRows(l.docs))
	require.NoError(b, err)
	// COPY into a staging table, then one INSERT that computes the leaves' tsvectors, so the
	// lexical index triggers see the rows as they see an ingest.
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE stage (chunk_id uuid, document_id uuid, owner_id text, chunk_index int,
			chunk_level smallint, content text, content_hash text, token_count int, metadata jsonb, embedding vector) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage"}, []string{"chunk_id", "document_id", "owner_id", "chunk_index",
			"chunk_level", "content", "content_hash", "token_count", "metadata", "embedding"}, pgx.CopyFromRows(l.chunks)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content,
				content_hash, token_count, metadata, embedding, search_vector)
			SELECT chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, metadata,
				embedding, CASE WHEN chunk_level = 0 THEN to_tsvector('english', content) END FROM stage`)
		return err
	})
	require.NoError(b, err)
	copied := time.Since(start)
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '4GB'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL max_parallel_maintenance_workers = 1`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)`)
		return err
	})
	require.NoError(b, err)
	_, err = l.pool.Exec(ctx, `VACUUM ANALYZE documents, chunks, chunk_terms, chunk_stats`)
	require.NoError(b, err)
	b.Logf("loaded %d chunks into %s: COPY %s, HNSW build and VACUUM %s", len(l.chunks), l.schema,
		copied.Round(time.Millisecond), (time.Since(start) - copied).Round(time.Millisecond))
	l.docs, l.chunks = nil, nil
}

func newTestUUID() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkSearch measures search latency per mode in one schema-tier tenant holding 10k (and,
// with TENANTMEM_BENCH_LARGE=1, 100k) leaf chunks of synthetic Zipf text of about 60 words,
// embedded with the builtin embedder. Each op is one Engine.Search as the router role, query
// embedding and history record included; queries are 1 to 3 words from the same vocabulary.
func BenchmarkSearch(b *testing.B) {
	for _, size := range []int{10_000, 100_000} {
		for _, tier := range tiers {
			b.Run(fmt.Sprintf("chunks=%dk/tier=%s", size/1000, tier), func(b *testing.B) {
				if size > 10_000 {
					largeBenchmarks(b)
				}
				benchSearchSize(b, size, tier)
			})
		}
	}
}

func benchSearchSize(b *testing.B, size int, tier registry.Tier) {
	e := newEnvDim(b, benchDim)
	p, err := embed.NewBuiltin(benchDim)
	require.NoError(b, err)
	ctx := context.Background()
	s := e.tenant(b, tier)
	l := newLoader(b, e, s.Schema)
	g := newTextGen(11)
	const perDoc = 20
	for done := 0; done < size; done += perDoc {
		texts := make([]string, perDoc)
		for i := range texts {
			texts[i] = g.words(60)
		}
		vecs, err := p.Embed(ctx, texts)
		require.NoError(b, err)
		l.add(s.OwnerID, texts, vecs)
	}
	l.load(b)
	if os.Getenv("TENANTMEM_BENCH_LEAKPROOF") == "1" {
		// What `provisioner init` could do (see docs/memory.md, "Text search under row-level
		// security"): let the planner use the GIN index for @@ under RLS.
		_, err := e.admin.Exec(ctx, `ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF`)
		require.NoError(b, err)
	}
	qg := newTextGen(99)
	queries := make([]string, 500)
	stop := map[string]bool{}
	for _, w := range vocabulary[:40] {
		stop[w] = true
	}
	for i := range queries {
		// At least one word that is not a stop word: text search refuses a query of stop words.
		for queries[i] == "" || !slices.ContainsFunc(strings.Fields(queries[i]), func(w string) bool { return !stop[w] }) {
			queries[i] = qg.words(1 + i%3)
		}
	}
	// Ground truth for the recall of the vector paths: the similarity of the exact scan's 10th
	// hit. The builtin embedder gives many chunks exactly the same similarity to a short query,
	// so recall counts the results at least that similar (tie-aware), not chunk ids.
	exactEng := newEngine(b, p, func(c *memory.Config) { c.ExactSearchThreshold = math.MaxInt32 })
	truth := make([]float64, 100)
	for i := range truth {
		res, err := exactEng.Search(ctx, s, memory.SearchParams{QueryText: queries[i], SearchType: memory.SearchVector})
		require.NoError(b, err)
		truth[i] = *res.Results[len(res.Results)-1].Similarity
	}
	// Ground truth of text search: BM25 over every posting (LexicalDepth -1), by chunk id.
	exactText := newEngine(b, p, func(c *memory.Config) { c.LexicalDepth = -1 })
	textTruth := make([][]string, 100)
	for i := range textTruth {
		res, err := exactText.Search(ctx, s, memory.SearchParams{QueryText: queries[i], SearchType: memory.SearchText})
		require.NoError(b, err)
		for _, r := range res.Results {
			textTruth[i] = append(textTruth[i], r.ChunkID)
		}
	}
	// Warm the caches: every mode, as many queries as a sub-benchmark runs.
	warm := newEngine(b, p)
	for i := range 300 {
		_, err := warm.Search(ctx, s, memory.SearchParams{QueryText: queries[i%len(queries)], SearchType: modes[i%len(modes)]})
		require.NoError(b, err)
	}
	for _, cfg := range []struct {
		name          string
		threshold, ef int
	}{{"default", 0, 0}, {"hnsw-ef100", -1, 100}, {"hnsw-ef200", -1, 200}, {"hnsw-ef400", -1, 400}, {"exact", math.MaxInt32, 0}} {
		eng := newEngine(b, p, func(c *memory.Config) { c.ExactSearchThreshold, c.EfSearch = cfg.threshold, cfg.ef })
		for _, mode := range modes {
			if cfg.name != "default" && mode != memory.SearchVector {
				continue
			}
			b.Run(fmt.Sprintf("mode=%s/path=%s", mode, cfg.name), func(b *testing.B) {
				durs := make([]time.Duration, 0, b.N)
				results, judged := 0, 0
				var recall float64
				b.ResetTimer()
				for i := range b.N {
					t0 := time.Now()
					res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: queries[i%len(queries)], SearchType: mode})
					if err != nil {
						b.Fatal(err)
					}
					durs = append(durs, time.Since(t0))
					results += len(res.Results)
					if mode == memory.SearchText && i%len(queries) < len(textTruth) && len(textTruth[i%len(queries)]) > 0 {
						want := textTruth[i%len(queries)]
						hits := 0
						for _, r := range res.Results {
							if slices.Contains(want, r.ChunkID) {
								hits++
							}
						}
						recall += float64(hits) / float64(len(want))
						judged++
					}
					if mode == memory.SearchVector && i%len(queries) < len(truth) {
						hits := 0
						for _, r := range res.Results {
							if *r.Similarity >= truth[i%len(queries)]-1e-9 {
								hits++
							}
						}
						recall += float64(hits) / 10
						judged++
					}
				}
				b.ReportMetric(ms(percentile(durs, 50)), "p50-ms")
				b.ReportMetric(ms(percentile(durs, 99)), "p99-ms")
				b.ReportMetric(float64(results)/float64(b.N), "results/op")
				if judged > 0 {
					b.ReportMetric(recall/float64(judged), "recall@10")
				}
			})
		}
	}
}
