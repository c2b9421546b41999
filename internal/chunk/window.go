package chunk

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// span is a trimmed, non-empty byte range of the document with its token count.
type span struct {
	start, end, tokens int
}

// cutMode selects where a full window prefers to end.
type cutMode uint8

const (
	// cutProse prefers a paragraph or sentence end, then a line end, then ", ", "; " or ": ".
	cutProse cutMode = iota
	// cutLines prefers a blank line, then a line end (source code).
	cutLines
)

// cutRatio is the share of a full window, in tokens, that a preferred cut must keep: a window is only
// cut back to a sentence or line end that lies in its last fifth.
const (
	cutRatioNum = 4
	cutRatioDen = 5
)

// windower cuts text into token windows. Its buffers are reused from one window to the next, so a
// windower must not be shared between goroutines.
type windower struct {
	ends []int // end offset of every piece of the current window
	cums []int // tokens from the window start to ends[k]
}

// split appends to dst the windows of at most size tokens that cover text, each trimmed of surrounding
// whitespace; base is the offset of text in the document. Consecutive windows share about overlap
// tokens, and the start of the next window always lies after the start of the previous one.
func (w *windower) split(dst []span, text string, base, size, overlap int, mode cutMode) []span {
	pos := skipSpace(text, 0)
	for pos < len(text) {
		w.ends, w.cums = w.ends[:0], w.cums[:0]
		i, tok, full := pos, 0, false
		for i < len(text) {
			e, t := nextPiece(text, i)
			if tok+t > size && len(w.ends) > 0 {
				full = true
				break
			}
			tok += t
			i = e
			w.ends = append(w.ends, e)
			w.cums = append(w.cums, tok)
		}

		cut := len(w.ends) - 1
		if full {
			cut = w.chooseCut(text, mode)
		}
		var end, tokens int
		for {
			end = trimRight(text, pos, w.ends[cut])
			tokens = w.count(text, pos, end, cut)
			if tokens <= size || cut == 0 {
				break
			}
			cut-- // the trimmed window counts more than the running sum: rare, stay in budget
		}
		dst = append(dst, span{start: base + pos, end: base + end, tokens: tokens})

		next := skipSpace(text, w.ends[cut])
		if next >= len(text) {
			break
		}
		// Advance by (tokens in this window - overlap), to the end of a piece.
		target := max(w.cums[cut]-overlap, 1)
		k := sort.SearchInts(w.cums[:cut+1], target)
		if overlap > 1 {
			k = w.alignStart(text, k, cut, overlap, mode)
		}
		start := skipSpace(text, w.ends[k])
		if start <= pos || start > next {
			start = next
		}
		pos = start
	}
	return dst
}

// count returns CountTokens(text[pos:end]) for a window that ends inside or at the end of piece cut.
// Trimming only changes the last pieces, and the pre-tokenizer looks at most one rune past a piece,
// so the pieces that end before the last one starting before end are counted already.
func (w *windower) count(text string, pos, end, cut int) int {
	m := cut
	for m > 0 && w.ends[m-1] >= end {
		m--
	}
	if m == 0 {
		return CountTokens(text[pos:end])
	}
	return w.cums[m-1] + CountTokens(text[w.ends[m-1]:end])
}

// alignStart moves the start of the next window, the end of piece k, to the nearest sentence end (for
// source code a blank line, else a line end) whose overlap with the window ending at piece cut stays
// between half and one and a half times overlap, so that the overlap starts with a whole sentence or
// line. It returns k when there is none.
func (w *windower) alignStart(text string, k, cut, overlap int, mode cutMode) int {
	lo, hi := w.cums[cut]-overlap*3/2, w.cums[cut]-overlap/2
	from := sort.SearchInts(w.cums[:cut], max(lo, 1))
	for _, want := range startPreferences[mode] {
		best, bestDist := k, -1
		for j := from; j < cut && w.cums[j] <= hi; j++ {
			if boundaryAt(text, w.ends[j])&want == 0 {
				continue
			}
			if d := abs(w.cums[j] - w.cums[k]); bestDist < 0 || d < bestDist {
				best, bestDist = j, d
			}
		}
		if bestDist >= 0 {
			return best
		}
	}
	return k
}

// startPreferences lists, per cut mode, the boundaries a window prefers to start after, best first.
var startPreferences = [...][]int{
	cutProse: {atSentence | atParagraph, atNewline},
	cutLines: {atParagraph, atNewline},
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// boundary flags describe the text around a piece boundary.
const (
	atParagraph = 1 << iota // a blank line
	atSentence              // ". ", "! ", "? " (closing quotes and brackets allowed), "。"
	atNewline               // a line end
	atClause                // ", ", "; ", ": "
)

// chooseCut returns the index of the piece after which a full window ends.
func (w *windower) chooseCut(text string, mode cutMode) int {
	last := len(w.ends) - 1
	minTokens := (w.cums[last]*cutRatioNum + cutRatioDen - 1) / cutRatioDen
	newline, clause := -1, -1
	for k := last; k >= 0 && w.cums[k] >= minTokens; k-- {
		f := boundaryAt(text, w.ends[k])
		switch mode {
		case cutLines:
			if f&atParagraph != 0 {
				return k
			}
		default:
			if f&(atParagraph|atSentence) != 0 {
				return k
			}
			if f&atClause != 0 && clause < 0 {
				clause = k
			}
		}
		if f&atNewline != 0 && newline < 0 {
			newline = k
		}
	}
	switch {
	case newline >= 0:
		return newline
	case clause >= 0:
		return clause
	}
	return last
}

// maxBoundaryScan bounds the whitespace inspected on each side of a boundary.
const maxBoundaryScan = 64

// boundaryAt classifies the boundary at text[b].
func boundaryAt(text string, b int) int {
	newlines := 0
	j := b
	for j > 0 && b-j < maxBoundaryScan && isASCIISpace(text[j-1]) {
		j--
		if text[j] == '\n' {
			newlines++
		}
	}
	after := b
	for after < len(text) && after-b < maxBoundaryScan && isASCIISpace(text[after]) {
		if text[after] == '\n' {
			newlines++
		}
		after++
	}
	f := 0
	switch {
	case newlines >= 2:
		f |= atParagraph | atNewline
	case newlines == 1:
		f |= atNewline
	}
	head := text[:j]
	// Full-width sentence ends need no space after them.
	for _, end := range [...]string{"。", "！", "？"} {
		if strings.HasSuffix(head, end) {
			return f | atSentence
		}
	}
	if j == b && after == b && b < len(text) {
		return f // no whitespace at the boundary: "3.14", "e.g"
	}
	head = trimClosers(head)
	if head == "" {
		return f
	}
	switch head[len(head)-1] {
	case '.', '!', '?':
		f |= atSentence
	case ',', ';', ':':
		f |= atClause
	}
	return f
}

// trimClosers strips closing quotes, brackets and emphasis markers from the end of s.
func trimClosers(s string) string {
	for s != "" {
		switch {
		case strings.IndexByte(`"')]}*_`, s[len(s)-1]) >= 0:
			s = s[:len(s)-1]
		case strings.HasSuffix(s, "”"), strings.HasSuffix(s, "’"), strings.HasSuffix(s, "»"):
			_, n := utf8.DecodeLastRuneInString(s)
			s = s[:len(s)-n]
		default:
			return s
		}
	}
	return s
}

func isASCIISpace(b byte) bool {
	return b == ' ' || b == '\n' || b == '\t' || b == '\r' || b == '\v' || b == '\f'
}

// skipSpace returns the offset of the first non-whitespace rune of s at or after i, or len(s).
func skipSpace(s string, i int) int {
	for i < len(s) {
		if b := s[i]; b < utf8.RuneSelf {
			if !isASCIISpace(b) {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			return i
		}
		i += n
	}
	return i
}

// trimRight returns the end of s[start:end] without trailing whitespace.
func trimRight(s string, start, end int) int {
	return start + len(strings.TrimRightFunc(s[start:end], unicode.IsSpace))
}

// trimSpan returns s[start:end] trimmed of surrounding whitespace as offsets; start == end if it is
// blank.
func trimSpan(s string, start, end int) (int, int) {
	start = min(skipSpace(s, start), end)
	return start, max(start, trimRight(s, start, end))
}
