package embed

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Limits and default of the [Builtin] dimension.
const (
	// DefaultBuiltinDimension is the dimension of the builtin embedder when none is configured.
	// It matches common small sentence models (all-MiniLM-L6-v2), so the same pgvector column
	// size works for both.
	DefaultBuiltinDimension = 384
	// MinBuiltinDimension is the smallest dimension NewBuiltin accepts.
	MinBuiltinDimension = 8
	// MaxBuiltinDimension is the largest dimension NewBuiltin accepts.
	MaxBuiltinDimension = 4096
)

// Feature groups and their weights. A feature's weight is groupWeight × (1 + ln tf).
const (
	groupWord    = 0 // stemmed word unigram
	groupBigram  = 1 // pair of adjacent stemmed content words
	groupTrigram = 2 // character trigram of a word, with word-boundary markers

	weightWord    = 1.0
	weightBigram  = 0.6
	weightTrigram = 0.3
)

var groupWeights = [3]float64{weightWord, weightBigram, weightTrigram}

// Builtin is the offline embedder: signed feature hashing of words, word bigrams and character
// trigrams, with sublinear term frequency, L2-normalised. It needs no network and no model files,
// and the same text always yields the same vector, bit for bit (see the package documentation for
// what it is and is not good for).
//
// A Builtin is immutable and safe for concurrent use.
type Builtin struct {
	dim  int
	name string
	// empty is the vector of texts without features (empty, blanks, punctuation only).
	empty []float32
}

// NewBuiltin returns a builtin embedder of dimension dim; dim 0 means
// [DefaultBuiltinDimension]. Any other dim outside [MinBuiltinDimension, MaxBuiltinDimension]
// is an error.
func NewBuiltin(dim int) (*Builtin, error) {
	if dim == 0 {
		dim = DefaultBuiltinDimension
	}
	if dim < MinBuiltinDimension || dim > MaxBuiltinDimension {
		return nil, fmt.Errorf("embed: Dimension must be in [%d, %d] for the builtin embedder, got %d",
			MinBuiltinDimension, MaxBuiltinDimension, dim)
	}
	empty := make([]float32, dim)
	c := float32(1 / math.Sqrt(float64(dim)))
	for i := range empty {
		empty[i] = c
	}
	return &Builtin{dim: dim, name: fmt.Sprintf("builtin-hash-%d", dim), empty: empty}, nil
}

// Name returns "builtin-hash-<dim>". Any change to the algorithm that changes vectors must also
// change this name, since stored vectors would no longer be comparable with new ones.
func (b *Builtin) Name() string { return b.name }

// InProcess reports true: the builtin embedder uses this process's CPU (see [InProcess]).
func (b *Builtin) InProcess() bool { return true }

// Dimension returns the length of the vectors b produces.
func (b *Builtin) Dimension() int { return b.dim }

// Embed returns one unit-length vector per text. A text without any letter or digit (empty,
// whitespace, punctuation) gets a fixed non-zero unit vector, the same for all such texts, so
// cosine similarity is always defined. Embed fails only when ctx is done.
func (b *Builtin) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	s := scratchPool.Get().(*scratch)
	defer putScratch(s)
	for i, t := range texts {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("embed: %w", err)
			}
		}
		out[i] = b.embedOne(s, t)
	}
	return out, nil
}

// scratch holds the reusable buffers of one embedding.
type scratch struct {
	text     []byte    // NFKC-normalised, lower-cased text
	words    []word    // words of text, in order
	feats    []uint64  // tagged feature hashes, one per occurrence
	table    []tfEntry // open-addressing table: distinct features and their counts
	acc      []float64 // one accumulator per dimension
	padded   []byte    // one word with boundary markers
	runeOffs []int     // rune start offsets in padded
}

// tfEntry is a slot of scratch.table; tf 0 marks an empty slot.
type tfEntry struct {
	key uint64
	tf  int32
}

// count fills s.table with the distinct features of s.feats and their term frequencies. The
// table size depends only on the number of features, and slots are filled in feature order, so
// the slot order (which is the order of the floating-point sums) is a function of the text
// alone. A hash table rather than a sort: sorting random keys costs twice as much.
func (s *scratch) count() {
	size := 1 << bits.Len(uint(2*len(s.feats))) // load factor at most 1/2
	s.table = slices.Grow(s.table[:0], size)[:size]
	clear(s.table)
	mask := uint64(size - 1)
	for _, h := range s.feats {
		// Probe with bits 3..31: the bucket uses 32..63, and 0..2 are group and sign.
		for i := h >> 3 & mask; ; i = (i + 1) & mask {
			e := &s.table[i]
			if e.tf == 0 {
				e.key, e.tf = h, 1
				break
			}
			if e.key == h {
				e.tf++
				break
			}
		}
	}
}

// word is a word of the text: its stem is text[start:stemEnd] + suffix.
type word struct {
	start, stemEnd int
	suffix         string
	stem           uint64 // hash of the stem
	stop           bool
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// putScratch returns s to the pool unless a huge text made its buffers too big to keep around.
func putScratch(s *scratch) {
	if cap(s.text) > 1<<20 || cap(s.feats) > 1<<18 || cap(s.table) > 1<<19 {
		return
	}
	scratchPool.Put(s)
}

func (b *Builtin) embedOne(s *scratch, text string) []float32 {
	s.features(text)
	if len(s.feats) == 0 {
		return slices.Clone(b.empty)
	}
	s.count()

	s.acc = slices.Grow(s.acc[:0], b.dim)[:b.dim]
	clear(s.acc)
	dim := uint64(b.dim)
	for _, e := range s.table {
		if e.tf == 0 {
			continue
		}
		h := e.key
		w := float64(groupWeights[h&3] * float64(1+ln(int(e.tf))))
		if h&4 != 0 {
			w = -w
		}
		k := (h >> 32) * dim >> 32
		s.acc[k] = float64(s.acc[k] + w)
	}

	var ss float64
	for _, x := range s.acc {
		ss = float64(ss + float64(x*x))
	}
	v := make([]float32, b.dim)
	if ss == 0 { // every feature cancelled out in its bucket; vanishingly rare
		copy(v, b.empty)
		return v
	}
	n := math.Sqrt(ss)
	for i, x := range s.acc {
		v[i] = float32(x / n)
	}
	return v
}

// features fills s.feats with the tagged hashes of text's features, in text order: for each
// content word, its stem, the pair (previous content word, this one), and its stem's trigrams.
func (s *scratch) features(text string) {
	s.text = norm.NFKC.AppendString(s.text[:0], text)
	s.tokenize()
	s.feats = s.feats[:0]

	content := 0
	for _, w := range s.words {
		if !w.stop {
			content++
		}
	}
	// A text made only of stop words still deserves a vector of its own.
	keepStop := content == 0

	var prev uint64
	havePrev := false
	for _, w := range s.words {
		if w.stop && !keepStop {
			continue
		}
		s.feats = append(s.feats, tag(w.stem, groupWord))
		if havePrev {
			s.feats = append(s.feats, tag(mix(prev^bits.RotateLeft64(w.stem, 29)^0x9e3779b97f4a7c15), groupBigram))
		}
		prev, havePrev = w.stem, true
		s.trigrams(s.text[w.start:w.stemEnd], w.suffix)
	}
}

// tokenize splits s.text into s.words. A word is a run of letters, digits and combining marks;
// apostrophes inside a word are dropped ("user's" → "users"), and every other rune separates
// words. The lower-cased words are appended after the source text in s.text (lower-casing can
// change a rune's length, so they cannot be rewritten in place), and s.words indexes them there.
func (s *scratch) tokenize() {
	s.words = s.words[:0]
	buf := s.text
	base := len(buf)
	start := -1
	for i := 0; i < base; {
		if c := buf[i]; c < utf8.RuneSelf { // ASCII fast path
			i++
			switch {
			case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case c == '\'' && start >= 0:
				continue
			default:
				if start >= 0 {
					s.words = append(s.words, s.newWord(buf, start, len(buf)))
					start = -1
				}
				continue
			}
			if start < 0 {
				start = len(buf)
			}
			buf = append(buf, c)
			continue
		}
		r, size := utf8.DecodeRune(buf[i:base]) // invalid UTF-8 gives RuneError, a separator
		i += size
		switch {
		case unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.In(r, unicode.Mn, unicode.Mc):
			if start < 0 {
				start = len(buf)
			}
			buf = utf8.AppendRune(buf, unicode.ToLower(r))
		case r == '\u2019' && start >= 0:
			// inside a word: drop it
		default:
			if start >= 0 {
				s.words = append(s.words, s.newWord(buf, start, len(buf)))
				start = -1
			}
		}
	}
	if start >= 0 {
		s.words = append(s.words, s.newWord(buf, start, len(buf)))
	}
	s.text = buf
}

func (s *scratch) newWord(buf []byte, start, end int) word {
	w := buf[start:end]
	stop := false
	if len(w) <= maxStopWordLen {
		_, stop = stopWords[string(w)]
	}
	stem, suffix := stemWord(w)
	h := fnvString(fnvBytes(fnvOffset, stem), suffix)
	return word{start: start, stemEnd: start + len(stem), suffix: suffix, stem: mix(h), stop: stop}
}

// trigrams appends the character trigrams of the stem w+suffix, framed by boundary markers:
// "cat" gives "^ca", "cat", "at$".
func (s *scratch) trigrams(w []byte, suffix string) {
	s.padded = append(append(append(append(s.padded[:0], 0x01), w...), suffix...), 0x02)
	s.runeOffs = s.runeOffs[:0]
	for i := 0; i < len(s.padded); {
		s.runeOffs = append(s.runeOffs, i)
		_, size := utf8.DecodeRune(s.padded[i:])
		i += size
	}
	s.runeOffs = append(s.runeOffs, len(s.padded))
	for i := 0; i+3 < len(s.runeOffs); i++ {
		h := fnvBytes(fnvOffset^0x7472696772616d, s.padded[s.runeOffs[i]:s.runeOffs[i+3]])
		s.feats = append(s.feats, tag(mix(h), groupTrigram))
	}
}

// stemWord strips a few English inflections from a lower-cased word, in two steps like Porter's
// step 1: plurals ("s", "es", "ies"), then "ing" and "ed" when the rest keeps a vowel (undoubling
// a final consonant: "running" → "run", "embeddings" → "embed"). It returns the stem as a prefix
// of w plus a suffix to append ("queries" → "quer" + "y"). It is deliberately light: it only has
// to map common variants of a word to one feature; character trigrams absorb the rest.
// Non-ASCII endings are left alone.
func stemWord(w []byte) (prefix []byte, suffix string) {
	n := len(w)
	switch {
	case n > 4 && hasSuffix(w, "ies"):
		return w[:n-3], "y"
	case hasSuffix(w, "sses"):
		w = w[:n-2]
	case n > 4 && (hasSuffix(w, "xes") || hasSuffix(w, "ches") || hasSuffix(w, "shes")):
		w = w[:n-2]
	case hasSuffix(w, "ss") || hasSuffix(w, "us") || hasSuffix(w, "is"):
	case n > 3 && hasSuffix(w, "s"):
		w = w[:n-1]
	}
	n = len(w)
	switch {
	case n > 5 && hasSuffix(w, "ing") && hasVowel(w[:n-3]):
		w = undouble(w[:n-3])
	case n > 4 && hasSuffix(w, "ed") && !hasSuffix(w, "eed") && hasVowel(w[:n-2]):
		w = undouble(w[:n-2])
	}
	return w, ""
}

func hasSuffix(w []byte, s string) bool {
	return len(w) >= len(s) && string(w[len(w)-len(s):]) == s
}

func hasVowel(w []byte) bool {
	for _, c := range w {
		if isVowel(c) {
			return true
		}
	}
	return false
}

// undouble drops the last letter of a stem that ends in a doubled consonant other than l, s and
// z ("runn" → "run", "embedd" → "embed", but "install" and "pass" stay).
func undouble(w []byte) []byte {
	n := len(w)
	if n >= 3 && w[n-1] == w[n-2] {
		switch c := w[n-1]; {
		case c >= 'a' && c <= 'z' && !isVowel(c) && c != 'l' && c != 's' && c != 'z':
			return w[:n-1]
		}
	}
	return w
}

func isVowel(c byte) bool {
	switch c {
	case 'a', 'e', 'i', 'o', 'u', 'y':
		return true
	}
	return false
}

// ln returns the natural logarithm of n ≥ 1 using only basic IEEE-754 operations, each rounded
// explicitly. math.Log has assembly implementations on some architectures, and the compiler may
// fuse multiply-adds on others; either could change the last bit, and the builtin embedder
// promises identical vectors on every machine.
func ln(n int) float64 {
	if n < len(lnTable) {
		return lnTable[n]
	}
	return lnSeries(n)
}

var lnTable = func() (t [256]float64) {
	for i := 1; i < len(t); i++ {
		t[i] = lnSeries(i)
	}
	return t
}()

func lnSeries(n int) float64 {
	frac, exp := math.Frexp(float64(n)) // exact: n = frac × 2^exp, frac in [0.5, 1)
	m := float64(frac * 2)              // [1, 2), exact
	e := exp - 1
	s := float64(float64(m-1) / float64(m+1)) // [0, 1/3)
	s2 := float64(s * s)
	var sum float64
	term := s
	// ln m = 2·atanh(s) = 2·(s + s³/3 + s⁵/5 + …); s < 1/3, so 30 terms are far below 1 ulp.
	for k := 1; k < 60; k += 2 {
		sum = float64(sum + float64(term/float64(k)))
		term = float64(term * s2)
	}
	return float64(float64(2*sum) + float64(float64(e)*math.Ln2))
}

// FNV-1a, written out so that hashing allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix is the splitmix64 finaliser; it spreads FNV's weak high bits over the whole word.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// tag stores the feature group in the two low bits of a hash. Bit 2 gives the sign and bits
// 32..63 the bucket.
func tag(h uint64, group uint64) uint64 { return h&^3 | group }

// stopWords are common English function words. They carry little meaning and, without IDF
// weighting, would make unrelated texts look alike; they are skipped unless a text has nothing
// else.
var stopWords = func() map[string]struct{} {
	m := make(map[string]struct{})
	for _, w := range []string{
		"a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do",
		"does", "for", "from", "had", "has", "have", "he", "her", "his", "how", "i", "if", "in",
		"into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "she", "so",
		"than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
		"to", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with",
		"would", "you", "your",
	} {
		if len(w) > maxStopWordLen {
			panic("embed: stop word longer than maxStopWordLen: " + w)
		}
		m[w] = struct{}{}
	}
	return m
}()

// maxStopWordLen is the length in bytes of the longest stop word.
const maxStopWordLen = 5
