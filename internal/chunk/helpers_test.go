package chunk

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// words is the vocabulary of generated prose.
var words = strings.Fields(`the a of and to in is that for it as with was on be by this are from at an
or have not which but had they their one all were we when there can been has more if will would about
what so other into some its time only them could these two may first then do any like my now over such
our man me even most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world still own see men
work long get here between both life being under never day same another know while last might us great
old year off come since against go came right used take three house tenant memory retrieval vector
embedding window parent child sentence paragraph database schema migration index search query ranking`)

// prose returns deterministic English-like text of about n words in sentences and paragraphs.
func prose(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 42))
	var b strings.Builder
	sentence := 0
	for i := 0; i < n; {
		l := 6 + r.IntN(14)
		for k := 0; k < l && i < n; k, i = k+1, i+1 {
			w := words[r.IntN(len(words))]
			if k == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			} else {
				b.WriteByte(' ')
				if r.IntN(15) == 0 {
					b.WriteString(w + ",")
					continue
				}
			}
			b.WriteString(w)
		}
		b.WriteString(".")
		sentence++
		if sentence%5 == 0 {
			b.WriteString("\n\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String())
}

// requireValid asserts the invariants that every result of Split must satisfy, given the resolved
// window sizes.
func requireValid(t testing.TB, doc string, parentSize, childSize int, chunks []Chunk) {
	t.Helper()
	require.NotEmpty(t, chunks)
	byHash := map[string]string{}
	covered := make([]int, len(doc)+1)
	for i, c := range chunks {
		require.Equal(t, i, c.Index, "index")
		require.NotEmpty(t, c.Content, "chunk %d content", i)
		require.True(t, 0 <= c.Start && c.Start < c.End && c.End <= len(doc), "chunk %d offsets %d..%d", i, c.Start, c.End)
		require.Equal(t, doc[c.Start:c.End], c.Content, "chunk %d offsets", i)
		require.Equal(t, strings.TrimSpace(c.Content), c.Content, "chunk %d is trimmed", i)
		sum := sha256.Sum256([]byte(c.Content))
		require.Equal(t, hex.EncodeToString(sum[:]), c.ContentHash, "chunk %d hash", i)
		if prev, ok := byHash[c.ContentHash]; ok {
			require.Equal(t, prev, c.Content, "equal hashes, different content")
		}
		byHash[c.ContentHash] = c.Content
		require.Equal(t, CountTokens(c.Content), c.Tokens, "chunk %d tokens", i)
		require.NotNil(t, c.Metadata, "chunk %d metadata", i)

		switch {
		case c.ParentIndex == -1:
			require.LessOrEqual(t, c.Tokens, parentSize, "parent %d tokens", i)
			if c.Level == 1 {
				require.True(t, i+1 < len(chunks) && chunks[i+1].ParentIndex == i, "parent %d has children right after it", i)
			} else {
				require.Equal(t, 0, c.Level, "chunk %d level", i)
				require.True(t, i+1 == len(chunks) || chunks[i+1].ParentIndex == -1, "leaf %d has no children", i)
			}
		default:
			p := c.ParentIndex
			require.True(t, 0 <= p && p < i, "chunk %d parent index %d", i, p)
			require.Equal(t, 1, chunks[p].Level, "parent of %d has level 1", i)
			require.Equal(t, -1, chunks[p].ParentIndex, "parent of %d is top-level", i)
			require.True(t, chunks[i-1].Index == p || chunks[i-1].ParentIndex == p, "children of %d are contiguous", p)
			require.Equal(t, 0, c.Level, "child %d level", i)
			require.LessOrEqual(t, c.Tokens, childSize, "child %d tokens", i)
			require.True(t, chunks[p].Start <= c.Start && c.End <= chunks[p].End, "child %d inside its parent", i)
			require.NotEqual(t, chunks[p].Content, c.Content, "child %d repeats its parent", i)
		}
		if c.Level == 0 {
			covered[c.Start]++
			covered[c.End]--
		}
	}
	// The leaves cover every non-whitespace rune of the document.
	depth := make([]int, len(doc))
	for i, d := 0, 0; i < len(doc); i++ {
		d += covered[i]
		depth[i] = d
	}
	for i, r := range doc {
		if depth[i] == 0 && !unicode.IsSpace(r) {
			require.Failf(t, "uncovered text", "byte %d (%q) is in no leaf chunk", i, doc[max(0, i-20):min(len(doc), i+20)])
		}
	}
}

// leaves returns the chunks of level 0.
func leaves(chunks []Chunk) []Chunk {
	var out []Chunk
	for _, c := range chunks {
		if c.Level == 0 {
			out = append(out, c)
		}
	}
	return out
}

// children returns the children of the chunk at index parent.
func children(chunks []Chunk, parent int) []Chunk {
	var out []Chunk
	for _, c := range chunks {
		if c.ParentIndex == parent {
			out = append(out, c)
		}
	}
	return out
}

// topLevel returns the chunks without a parent.
func topLevel(chunks []Chunk) []Chunk { return children(chunks, -1) }
