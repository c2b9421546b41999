package memory

import (
	"strings"
	"unicode"
)

// webQuery is a query in web search syntax, split into what each part of lexical search needs.
type webQuery struct {
	// pos holds every word that may match (plain words and the words of required phrases),
	// separated by spaces: its lexemes are the terms BM25 scores.
	pos string
	// must holds the required phrases (and quoted words) in websearch_to_tsquery syntax, all of
	// which a chunk must match: "a b" "c". Empty when there is none.
	must string
	// not holds the excluded words and phrases, any of which removes a chunk: "a" or "b c".
	not string
}

// parseWebQuery reads web search syntax as users type it into search boxes: words are
// alternatives (OR; BM25 ranks), "quoted phrases" must occur (a quote left open runs to the end),
// a leading - excludes a word or a quoted phrase, and the word "or" is ignored (alternatives are
// the default). Punctuation is left to the text search parser. It never fails: a query of
// operators only has an empty pos.
func parseWebQuery(q string) webQuery {
	var pos, must, not []string
	rs := []rune(q)
	i := 0
	for i < len(rs) {
		for i < len(rs) && unicode.IsSpace(rs[i]) {
			i++
		}
		if i >= len(rs) {
			break
		}
		neg := false
		for i < len(rs) && rs[i] == '-' {
			neg = true
			i++
		}
		if i >= len(rs) {
			break
		}
		if unicode.IsSpace(rs[i]) {
			continue // a lone operator
		}
		if rs[i] == '"' {
			i++
			j := i
			for j < len(rs) && rs[j] != '"' {
				j++
			}
			phrase := strings.Join(strings.Fields(string(rs[i:j])), " ")
			i = j + 1
			if phrase == "" {
				continue
			}
			if neg {
				not = append(not, `"`+phrase+`"`)
			} else {
				must = append(must, `"`+phrase+`"`)
				pos = append(pos, phrase)
			}
			continue
		}
		j := i
		for j < len(rs) && !unicode.IsSpace(rs[j]) && rs[j] != '"' {
			j++
		}
		word := string(rs[i:j])
		i = j
		if strings.EqualFold(word, "or") && !neg {
			continue
		}
		if neg {
			not = append(not, `"`+word+`"`)
		} else {
			pos = append(pos, word)
		}
	}
	return webQuery{pos: strings.Join(pos, " "), must: strings.Join(must, " "), not: strings.Join(not, " or ")}
}
