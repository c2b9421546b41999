package chunk

import (
	"unicode"
	"unicode/utf8"
)

// maxPieceBytes caps the length of one pre-token. Real cl100k pre-tokens can be arbitrarily long (a
// run of letters, of punctuation or of whitespace), but the windows are cut at piece boundaries, so a
// piece must never be worth more tokens than MinSize. Cutting long runs every 32 bytes keeps every
// piece at or below 16 estimated tokens and changes the count of a long run by at most one.
const maxPieceBytes = 32

// class is the character class that drives the cl100k pre-tokenizer.
type class uint8

const (
	classOther   class = iota // neither letter, number nor whitespace: [^\s\p{L}\p{N}]
	classLetter               // \p{L}
	classNumber               // \p{N}
	classSpace                // \s other than \r and \n
	classNewline              // \r or \n
)

// asciiClass holds the class of every ASCII byte, so that the common case needs no rune decoding.
var asciiClass = func() (t [utf8.RuneSelf]class) {
	for b := range utf8.RuneSelf {
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
			t[b] = classLetter
		case '0' <= b && b <= '9':
			t[b] = classNumber
		case b == '\r' || b == '\n':
			t[b] = classNewline
		case b == ' ' || b == '\t' || b == '\v' || b == '\f':
			t[b] = classSpace
		default:
			t[b] = classOther
		}
	}
	return t
}()

// classAt returns the class of the rune starting at s[i], the rune and its width in bytes.
func classAt(s string, i int) (class, rune, int) {
	if b := s[i]; b < utf8.RuneSelf {
		return asciiClass[b], rune(b), 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	switch {
	case unicode.IsLetter(r):
		return classLetter, r, n
	case unicode.IsNumber(r):
		return classNumber, r, n
	case unicode.IsSpace(r):
		return classSpace, r, n
	}
	return classOther, r, n
}

// CountTokens estimates how many cl100k_base tokens (the encoding of OpenAI's text-embedding-3 and
// GPT-4 models) the string s encodes to.
//
// The estimate mirrors cl100k's pre-tokenizer exactly (contractions, letter runs with one leading
// non-letter, groups of one to three digits, punctuation runs, whitespace runs) and then prices each
// piece without the merge table: a word of up to eight Latin letters is one token, longer words cost
// one more token per five letters, camelCase humps and script changes start a new word, CJK and other
// scripts cost about one token per character, and digit groups, contractions, newline runs and short
// punctuation runs cost one token. On English prose and code the result is usually within a few percent
// of the real count and errs towards over-counting long rare words. See the package documentation for
// why that is accurate enough. CountTokens is safe for concurrent use and does not allocate.
func CountTokens(s string) int {
	total := 0
	for i := 0; i < len(s); {
		end, tokens := nextPiece(s, i)
		total += tokens
		i = end
	}
	return total
}

// nextPiece returns the end of the pre-token that starts at s[i] and its estimated token count. The
// alternatives are tried in the order of cl100k's pattern:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func nextPiece(s string, i int) (int, int) {
	c, r, n := classAt(s, i)
	switch c {
	case classLetter:
		return letterPiece(s, i, i)
	case classNumber:
		return numberPiece(s, i)
	case classNewline:
		return spacePiece(s, i)
	case classOther:
		if r == '\'' {
			if m := contraction(s, i+1); m > 0 {
				return i + 1 + m, 1
			}
		}
		if j := i + n; j < len(s) {
			if c2, _, _ := classAt(s, j); c2 == classLetter {
				return letterPiece(s, i, j)
			}
		}
		return punctPiece(s, i, i)
	default: // classSpace
		if j := i + n; j < len(s) {
			c2, _, _ := classAt(s, j)
			if c2 == classLetter {
				return letterPiece(s, i, j)
			}
			if r == ' ' && c2 == classOther {
				return punctPiece(s, i, j)
			}
		}
		return spacePiece(s, i)
	}
}

// contraction returns the length of the English contraction suffix ('s, 't, 're, 've, 'm, 'll, 'd,
// without the apostrophe) at s[i:], or 0.
func contraction(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	switch s[i] | 0x20 { // ASCII lower case
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if i+1 < len(s) && s[i+1]|0x20 == 'e' {
			return 2
		}
	case 'l':
		if i+1 < len(s) && s[i+1]|0x20 == 'l' {
			return 2
		}
	}
	return 0
}

// letterPiece consumes the letters that start at s[j], after the optional one-character prefix
// s[start:j], and prices them.
func letterPiece(s string, start, j int) (int, int) {
	end, ascii := j, true
	for end < len(s) && end-j < maxPieceBytes {
		if b := s[end]; b < utf8.RuneSelf {
			if asciiClass[b] != classLetter {
				break
			}
			end++
			continue
		}
		c, _, n := classAt(s, end)
		if c != classLetter {
			break
		}
		ascii = false
		end += n
	}
	var tokens int
	if ascii {
		tokens = asciiWordTokens(s[j:end])
	} else {
		tokens = wordTokens(s[j:end])
	}
	if start < j && s[start] != ' ' {
		tokens++ // "(word", "_word", ".word": the prefix is usually its own token
	}
	return end, tokens
}

// asciiWordTokens is wordTokens for a run of ASCII letters.
func asciiWordTokens(w string) int {
	total, n := 0, 0
	var prevUpper, prevPrevUpper bool
	for i := 0; i < len(w); i++ {
		upper := w[i] <= 'Z' // 'A'-'Z' sort before 'a'-'z'
		switch {
		case n > 0 && upper && !prevUpper:
			total += priceWord(scriptLatin, n)
			n = 0
		case n > 1 && !upper && prevUpper && prevPrevUpper:
			total += priceWord(scriptLatin, n-1)
			n = 1
		}
		n++
		prevPrevUpper, prevUpper = prevUpper, upper
	}
	return total + priceWord(scriptLatin, n)
}

// script groups letters by how densely cl100k encodes them.
type script uint8

const (
	scriptLatin    script = iota // Latin, including accented letters: BPE merges into whole words
	scriptAlphabet               // Greek, Cyrillic, Armenian, Hebrew, Arabic: about 2.5 letters per token
	scriptOther                  // CJK, Indic, Thai and the rest: about one token per character
)

func scriptOf(r rune) script {
	switch {
	case r < 0x0370:
		return scriptLatin
	case r < 0x0700:
		return scriptAlphabet
	case 0x1E00 <= r && r < 0x2000: // Latin Extended Additional, Greek Extended
		return scriptLatin
	}
	return scriptOther
}

// wordTokens prices a run of letters: it splits the run into words at camelCase humps
// ("getUserName", "HTTPServer") and script changes, and prices every word by its length.
func wordTokens(w string) int {
	total, n := 0, 0 // n is the length in runes of the current word
	cur := scriptLatin
	var prevUpper, prevPrevUpper bool
	for i := 0; i < len(w); {
		r, size := rune(w[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(w[i:])
		}
		i += size
		sc := scriptOf(r)
		upper := sc == scriptLatin && isUpper(r)
		lower := sc == scriptLatin && !upper
		switch {
		case n > 0 && sc != cur:
			total += priceWord(cur, n)
			n = 0
		case n > 0 && upper && !prevUpper:
			total += priceWord(cur, n) // "getUser": a hump starts a word
			n = 0
		case n > 1 && lower && prevUpper && prevPrevUpper:
			total += priceWord(cur, n-1) // "HTTPServer": the last capital starts the next word
			n = 1
		}
		cur = sc
		n++
		prevPrevUpper, prevUpper = prevUpper, upper
	}
	if n > 0 {
		total += priceWord(cur, n)
	}
	return total
}

func isUpper(r rune) bool {
	if r < utf8.RuneSelf {
		return 'A' <= r && r <= 'Z'
	}
	return unicode.IsUpper(r)
}

// priceWord estimates the tokens of one word of n letters of the given script.
func priceWord(sc script, n int) int {
	switch sc {
	case scriptLatin:
		if n <= 8 {
			return 1
		}
		return 1 + (n-8+4)/5
	case scriptAlphabet:
		return max(1, (2*n+4)/5)
	}
	return n
}

// numberPiece consumes one to three digits: cl100k has a token for every such group.
func numberPiece(s string, i int) (int, int) {
	for k := 0; k < 3 && i < len(s); k++ {
		c, _, n := classAt(s, i)
		if c != classNumber {
			break
		}
		i += n
	}
	return i, 1
}

// punctPiece consumes the punctuation run that starts at s[j] after the optional space s[start:j],
// followed by any newlines (` ?[^\s\p{L}\p{N}]+[\r\n]*`).
func punctPiece(s string, start, j int) (int, int) {
	end, ascii, same, wide := j, 0, true, 0
	for end < len(s) && end-start < maxPieceBytes {
		c, r, n := classAt(s, end)
		if c != classOther {
			break
		}
		if n == 1 {
			if ascii > 0 && s[end] != s[end-1] {
				same = false
			}
			ascii++
		} else if r > 0xFFFF {
			wide += 2 // emoji and other astral symbols are usually two or more byte tokens
		} else {
			wide++ // "—", "…", "“": one token each
		}
		end += n
	}
	tokens := wide
	switch {
	case ascii == 0:
	case same:
		tokens += (ascii + 7) / 8 // "...", "----------------": long runs of one character merge well
	default:
		tokens += (ascii + 2) / 3 // "();", "\"),"
	}
	newlines := 0
	for end < len(s) && (s[end] == '\n' || s[end] == '\r') && end-start < maxPieceBytes {
		end++
		newlines++
	}
	tokens += newlines / 5 // ".\n" and ".\n\n" are single tokens
	return end, max(tokens, 1)
}

// spacePiece consumes whitespace that is not the prefix of a word: everything up to the last newline
// of the run if it has one (`\s*[\r\n]+`), otherwise the run minus the space that belongs to the
// next word (`\s+(?!\S)`), or a single character (`\s+`).
func spacePiece(s string, i int) (int, int) {
	end, lastNewline, runes, lastStart := i, -1, 0, i
	for end < len(s) && end-i < maxPieceBytes {
		c, _, n := classAt(s, end)
		if c != classSpace && c != classNewline {
			break
		}
		if c == classNewline {
			lastNewline = end + n
		}
		lastStart = end
		end += n
		runes++
	}
	switch {
	case lastNewline > 0:
		end = lastNewline
	case end < len(s) && runes > 1:
		if c, _, _ := classAt(s, end); c != classSpace && c != classNewline {
			end = lastStart // leave the last space to the next word or number
		}
	}
	return end, 1 + (end-i-1)/16
}
