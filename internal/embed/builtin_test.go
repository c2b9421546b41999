package embed

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// cosine returns the cosine similarity of a and b, computed in float64.
func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func norm2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func newBuiltin(t testing.TB, dim int) *Builtin {
	t.Helper()
	b, err := NewBuiltin(dim)
	require.NoError(t, err)
	return b
}

func embedOne(t testing.TB, p Provider, text string) []float32 {
	t.Helper()
	vs, err := p.Embed(context.Background(), []string{text})
	require.NoError(t, err)
	require.Len(t, vs, 1)
	return vs[0]
}

func TestNewBuiltinDimension(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given     int
		expectDim int
		expectErr string
	}{
		{given: 0, expectDim: 384},
		{given: 8, expectDim: 8},
		{given: 384, expectDim: 384},
		{given: 1536, expectDim: 1536},
		{given: 4096, expectDim: 4096},
		{given: 7, expectErr: "Dimension must be in [8, 4096]"},
		{given: 4097, expectErr: "Dimension must be in [8, 4096]"},
		{given: -1, expectErr: "Dimension must be in [8, 4096]"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.given), func(t *testing.T) {
			t.Parallel()
			b, err := NewBuiltin(tt.given)
			if tt.expectErr != "" {
				require.ErrorContains(t, err, tt.expectErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.expectDim, b.Dimension())
			require.Equal(t, fmt.Sprintf("builtin-hash-%d", tt.expectDim), b.Name())
			vs, err := b.Embed(context.Background(), []string{"hello world", "", "x"})
			require.NoError(t, err)
			for _, v := range vs {
				require.Len(t, v, tt.expectDim)
				require.InDelta(t, 1, norm2(v), 1e-5)
			}
		})
	}
}

// vectorDigest hashes the exact bits of vectors.
func vectorDigest(vs [][]float32) string {
	h := sha256.New()
	for _, v := range vs {
		for _, x := range v {
			_ = binary.Write(h, binary.LittleEndian, math.Float32bits(x))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

var goldenTexts = []string{
	"pgvector adds a vector type to PostgreSQL; HNSW indexes speed up nearest neighbour search.",
	"Crème brûlée: ÇA VA? Ünïcödé, 東京タワー, Ελληνικά, emoji 🚀 and numbers 3.14159.",
	"",
	"the the the",
	"repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat repeat",
}

func TestBuiltinDeterministic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, err := newBuiltin(t, 384).Embed(ctx, goldenTexts)
	require.NoError(t, err)
	b, err := newBuiltin(t, 384).Embed(ctx, goldenTexts)
	require.NoError(t, err)
	require.Equal(t, a, b, "two instances must agree bit for bit")

	// The same text in another batch, alone or after other texts, gives the same vector.
	for i, text := range goldenTexts {
		require.Equal(t, a[i], embedOne(t, newBuiltin(t, 384), text))
	}

	// Golden digest: the vectors are part of the on-disk format (stored embeddings). If this
	// fails after a deliberate change to the algorithm, change Builtin.Name too.
	require.Equal(t, "e6be2466ca86bdc57306586980f16268b171af60c0771a1491119e2df0c5dd59", vectorDigest(a))
}

func TestBuiltinUnitNorm(t *testing.T) {
	t.Parallel()
	b := newBuiltin(t, 384)
	texts := append(slices.Clone(goldenTexts),
		"a", "A", "!!!", "\t\n ", "Z", strings.Repeat("lorem ipsum dolor sit amet ", 2000),
		"\xff\xfe invalid utf-8 \xc3", "🙂🙂🙂", "٣٤٥ ١٢", "ǅemal ǈubljana")
	vs, err := b.Embed(context.Background(), texts)
	require.NoError(t, err)
	require.Len(t, vs, len(texts))
	for i, v := range vs {
		require.Len(t, v, 384)
		for _, x := range v {
			require.False(t, math.IsNaN(float64(x)) || math.IsInf(float64(x), 0), "text %d", i)
		}
		require.InDelta(t, 1, norm2(v), 1e-5, "text %d: %q", i, texts[i])
	}
}

func TestBuiltinRanking(t *testing.T) {
	t.Parallel()
	docs := map[string]string{
		"pgvector": "pgvector adds a vector data type to PostgreSQL. HNSW and IVFFlat indexes speed up " +
			"approximate nearest neighbour search over millions of vectors.",
		"cooking": "Simmer the tomatoes with garlic and olive oil for twenty minutes, then add fresh basil " +
			"and salt before serving the sauce over pasta.",
		"football": "The striker scored twice in the second half, and the club won the league title on " +
			"the last day of the football season.",
		"gardening": "Plant the tulip bulbs in autumn, water them well, and cover the bed with mulch " +
			"before the first frost.",
	}
	tests := []struct {
		given  string // query
		expect string // best doc
	}{
		{given: "postgres vector index", expect: "pgvector"},
		{given: "Indexing vectors in PostgreSQL", expect: "pgvector"},
		{given: "nearest-neighbor search", expect: "pgvector"},
		{given: "how do I cook pasta with tomato sauce?", expect: "cooking"},
		{given: "which club won the football league", expect: "football"},
		{given: "planting bulbs", expect: "gardening"},
	}
	for _, dim := range []int{128, 384, 1536} {
		b := newBuiltin(t, dim)
		docVec := map[string][]float32{}
		for name, text := range docs {
			docVec[name] = embedOne(t, b, text)
		}
		for _, tt := range tests {
			q := embedOne(t, b, tt.given)
			best := cosine(q, docVec[tt.expect])
			for name, v := range docVec {
				if name == tt.expect {
					continue
				}
				other := cosine(q, v)
				require.Greater(t, best-other, 0.1,
					"dim %d: query %q: %s (%.3f) must clearly beat %s (%.3f)", dim, tt.given, tt.expect, best, name, other)
			}
		}
	}
}

func TestBuiltinNormalisesText(t *testing.T) {
	t.Parallel()
	b := newBuiltin(t, 384)
	tests := []struct {
		given  []string // all must embed identically
		reason string
	}{
		{given: []string{"Café au lait", "cafe\u0301 AU LAIT", "CAFÉ au lait"}, reason: "NFC/NFD and case"},
		{given: []string{"ＰｏｓｔｇｒｅＳＱＬ", "postgresql"}, reason: "full-width forms (NFKC)"},
		{given: []string{"the user's index", "users index"}, reason: "apostrophe and stop words"},
		{given: []string{"vector, index!", "  vector\n\tindex  "}, reason: "punctuation and spaces"},
		{given: []string{"the HNSW indexes", "HNSW index"}, reason: "plural stemming and stop words"},
		{given: []string{"embeddings", "embedding", "embedded"}, reason: "stemming"},
	}
	for _, tt := range tests {
		want := embedOne(t, b, tt.given[0])
		for _, text := range tt.given[1:] {
			require.Equal(t, want, embedOne(t, b, text), "%s: %q vs %q", tt.reason, tt.given[0], text)
		}
	}
	require.NotEqual(t, embedOne(t, b, "vector index"), embedOne(t, b, "index vector"),
		"word order matters through bigrams")
	require.Greater(t, cosine(embedOne(t, b, "vector index"), embedOne(t, b, "index vector")), 0.7)
	require.Greater(t, cosine(embedOne(t, b, "postgres"), embedOne(t, b, "postgre"+"s database")), 0.4)
	require.Greater(t, cosine(embedOne(t, b, "postgres"), embedOne(t, b, "postgresql")), 0.3,
		"trigrams match a longer form of the word")
}

func TestStemWord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given  string
		expect string
	}{
		{given: "indexes", expect: "index"},
		{given: "queries", expect: "query"},
		{given: "classes", expect: "class"},
		{given: "matches", expect: "match"},
		{given: "vectors", expect: "vector"},
		{given: "status", expect: "status"},
		{given: "analysis", expect: "analysis"},
		{given: "class", expect: "class"},
		{given: "gas", expect: "gas"},
		{given: "running", expect: "run"},
		{given: "embedding", expect: "embed"},
		{given: "embeddings", expect: "embed"},
		{given: "installing", expect: "install"},
		{given: "indexed", expect: "index"},
		{given: "speed", expect: "speed"},
		{given: "speeds", expect: "speed"},
		{given: "string", expect: "string"},
		{given: "thing", expect: "thing"},
		{given: "red", expect: "red"},
		{given: "naïves", expect: "naïve"},
		{given: "日本語", expect: "日本語"},
	}
	for _, tt := range tests {
		prefix, suffix := stemWord([]byte(tt.given))
		require.Equal(t, tt.expect, string(prefix)+suffix, "given %q", tt.given)
	}
}

func TestBuiltinEmptyInput(t *testing.T) {
	t.Parallel()
	b := newBuiltin(t, 384)
	ctx := context.Background()

	for _, texts := range [][]string{nil, {}} {
		vs, err := b.Embed(ctx, texts)
		require.NoError(t, err)
		require.NotNil(t, vs)
		require.Empty(t, vs)
	}

	empty := embedOne(t, b, "")
	require.InDelta(t, 1, norm2(empty), 1e-6)
	for _, text := range []string{" ", "\n\t\r", "!!! ... ???", "—", "\u200b", "\xff"} {
		require.Equal(t, empty, embedOne(t, b, text), "%q", text)
	}
	for _, text := range []string{"postgres vector index", "a", "the"} {
		v := embedOne(t, b, text)
		c := cosine(empty, v)
		require.False(t, math.IsNaN(c))
		require.Less(t, math.Abs(c), 0.5, "%q", text)
	}

	// Returned vectors are the caller's: changing one must not change the next.
	empty[0] = 42
	require.NotEqual(t, float32(42), embedOne(t, b, "")[0])
}

func TestBuiltinConcurrent(t *testing.T) {
	t.Parallel()
	b := newBuiltin(t, 384)
	texts := make([]string, 50)
	for i := range texts {
		texts[i] = fmt.Sprintf("document %d about %s and vectors", i, strings.Repeat("postgres ", i%7))
	}
	want, err := b.Embed(context.Background(), texts)
	require.NoError(t, err)

	var wg sync.WaitGroup
	results := make([][][]float32, 16)
	for g := range results {
		wg.Go(func() {
			for range 5 {
				vs, err := b.Embed(context.Background(), texts)
				if err != nil {
					return
				}
				results[g] = vs
			}
		})
	}
	wg.Wait()
	for _, got := range results {
		require.Equal(t, want, got)
	}
}

func TestBuiltinContextCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newBuiltin(t, 64).Embed(ctx, []string{"a"})
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, IsTransient(err))
}

func TestLn(t *testing.T) {
	t.Parallel()
	for n := 1; n < 100000; n = n*3/2 + 1 {
		require.InEpsilon(t, math.Log(float64(n))+1, ln(n)+1, 1e-15, "n=%d", n)
	}
	require.Zero(t, ln(1))
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given      []float32
		expect     []float32
		expectNorm float64
	}{
		{given: []float32{3, 4}, expect: []float32{0.6, 0.8}, expectNorm: 5},
		{given: []float32{0, 0, 0}, expect: []float32{0, 0, 0}, expectNorm: 0},
		{given: []float32{}, expect: []float32{}, expectNorm: 0},
		{given: []float32{-2}, expect: []float32{-1}, expectNorm: 2},
	}
	for _, tt := range tests {
		v := slices.Clone(tt.given)
		require.InDelta(t, tt.expectNorm, Normalize(v), 1e-9)
		require.InDeltaSlice(t, tt.expect, v, 1e-7)
	}
	v := []float32{float32(math.NaN()), 1}
	Normalize(v)
	require.Equal(t, float32(1), v[1], "a NaN vector is left unchanged")
}

func BenchmarkBuiltinEmbed(b *testing.B) {
	// About 300 words of ordinary technical English.
	para := "PostgreSQL stores each tenant's documents in its own schema, and pgvector's HNSW index " +
		"answers approximate nearest neighbour queries over the chunk embeddings. The worker claims " +
		"pending jobs with FOR UPDATE SKIP LOCKED, embeds them in batches, and writes the vectors back " +
		"in the same transaction that marks the jobs done. "
	text := strings.Repeat(para, 6)
	tokens := len(strings.Fields(text))
	p := newBuiltin(b, 384)
	ctx := context.Background()

	b.Run(fmt.Sprintf("one_text_%d_words", tokens), func(b *testing.B) {
		b.ReportAllocs()
		texts := []string{text}
		for b.Loop() {
			if _, err := p.Embed(ctx, texts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("batch_96_texts", func(b *testing.B) {
		b.ReportAllocs()
		texts := make([]string, 96)
		for i := range texts {
			texts[i] = fmt.Sprintf("%d %s", i, text)
		}
		for b.Loop() {
			if _, err := p.Embed(ctx, texts); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/96, "ns/text")
	})
}
